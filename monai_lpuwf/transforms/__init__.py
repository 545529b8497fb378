"""UWF transforms: loading, field of view, SLO sharpening, elastix registration, CTRD map and presets."""

from .io import MODALITIES, LoadUWFImage, LoadUWFImaged, TiffFileReader, UWFImageError, read_uwf_array, save_uwf_image

__all__ = [
    "MODALITIES",
    "LoadUWFImage",
    "LoadUWFImaged",
    "TiffFileReader",
    "UWFImageError",
    "read_uwf_array",
    "save_uwf_image",
]
