"""Losses of LPUWF-LDM: the CTRD noise-prediction loss, an offline (local-weights) perceptual loss and the
vessel-band L1 loss of the supervised prior."""

from .ctrd import CTRDLoss
from .perceptual import OfflinePerceptualLoss
from .structure import VESSEL_BAND_SIGMAS, VesselBandL1Loss, vessel_band

__all__ = ["CTRDLoss", "OfflinePerceptualLoss", "VesselBandL1Loss", "vessel_band", "VESSEL_BAND_SIGMAS"]
