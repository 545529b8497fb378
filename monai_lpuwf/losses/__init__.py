"""Losses of LPUWF-LDM: the CTRD noise-prediction loss and an offline (local-weights) perceptual loss."""

from .ctrd import CTRDLoss
from .perceptual import OfflinePerceptualLoss

__all__ = ["CTRDLoss", "OfflinePerceptualLoss"]
