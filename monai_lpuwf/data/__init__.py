"""UWF image files (readers and writers), triplet datalists, synthetic UWF phantoms, the registration cache and
the samplers (size-grouped batches, epochs of a fixed number of draws)."""

from .batch_sampler import IterationSampler, SizeGroupedBatchSampler, iteration_sampler
from .datalists import (
    IMAGE_SUFFIXES,
    DataSourceError,
    IncompleteTripletError,
    datalist_from_file,
    datalist_from_folder,
    drop_duplicates,
    read_json_datalist,
    split_datalist,
    triplet_identity,
    write_datalist,
)
from .image_io import TiffFileReader, UWFImageError, read_uwf_array, save_uwf_image
from .phantoms import PHANTOM_MARKER, generate_phantoms, render_phantom
from .registration_cache import RegistrationCache, register_datalist

__all__ = [
    "UWFImageError",
    "TiffFileReader",
    "read_uwf_array",
    "save_uwf_image",
    "IMAGE_SUFFIXES",
    "DataSourceError",
    "IncompleteTripletError",
    "datalist_from_file",
    "datalist_from_folder",
    "read_json_datalist",
    "drop_duplicates",
    "triplet_identity",
    "split_datalist",
    "write_datalist",
    "PHANTOM_MARKER",
    "generate_phantoms",
    "render_phantom",
    "RegistrationCache",
    "register_datalist",
    "SizeGroupedBatchSampler",
    "IterationSampler",
    "iteration_sampler",
]
