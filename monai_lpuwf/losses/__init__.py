"""Losses of LPUWF-LDM. The offline perceptual loss lives in :mod:`monai_lpuwf.losses.perceptual`."""

from .ctrd import CTRDLoss

__all__ = ["CTRDLoss"]
