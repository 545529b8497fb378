"""Ready-made transform pipelines for training and inference (the ones the bundle configs use).

Training (:func:`uwf_train_transforms`), per item::

    load slo/early/late -> [register late onto early] -> [sharpen slo] -> [resize] -> field of view -> CTRD map
    -> [to ``device``] -> [augment: rotation +/-5 deg and random crop in one resampling of the crop, vertical +
    horizontal flips, identical for every key] -> float32

Everything before the augmentation is deterministic, so :class:`monai.data.CacheDataset` computes it once per
item; with ``device="cuda:0"`` the cached items live on the GPU and the random transforms (rotation and crop
by one ``grid_sample`` of the crop's pixels, flips by ``torch.flip``) run there too (MONAI's fast training
recipe: cache on the device, ``ThreadDataLoader``).

Inference (:func:`uwf_inference_transforms`)::

    load slo -> [check its scale against the model's training frames] -> [sharpen slo] -> pad to a multiple of
    the autoencoder's downsampling factor

whose padding :class:`monai.transforms.Invertd` undoes on the generated image::

    pre = uwf_inference_transforms(divisor=8)
    item = pre({"slo": "1.bmp"})                       # slo: (3, 688, 856) for an 853 x 682 picture
    item["pred"] = generate(item["slo"][None])[0]      # (1, 688, 856)
    item = Invertd(keys="pred", transform=pre, orig_keys="slo")(item)   # pred: (1, 682, 853)

Scale. Generation runs on the whole native-resolution frame, so by default training crops ``spatial_size`` at
the native resolution too (``crop_scale=None``, as the authors' ``Condition_aug_dataloader.py``; frames smaller
than the crop are padded with black) and validation takes the central ``spatial_size`` crop: the model sees
vessels at the size it will generate them. ``crop_scale=s`` resizes each frame to ``ceil(s * spatial_size)``
first (the whole eye in every crop, at another scale than generation) and validates on the whole frame resized
to ``spatial_size``; ``val_resize=True`` validates on the resized whole frame whatever the crop (the authors'
validation). :class:`~monai_lpuwf.transforms.scale.TrainingScaleRecord` stores the training scale in the model
file and generation warns when an input is far from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    DivisiblePadd,
    EnsureTyped,
    RandFlipd,
    Resized,
    SpatialPadd,
)
from monai.utils import ensure_tuple, ensure_tuple_rep, look_up_option

from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.transforms.augment import RandRotateCropd
from monai_lpuwf.transforms.difference import CrossTemporalDifferenced
from monai_lpuwf.transforms.enhance import UnsharpMaskd
from monai_lpuwf.transforms.fov import FieldOfViewd
from monai_lpuwf.transforms.io import LoadUWFImaged
from monai_lpuwf.transforms.registration import RegisterElastixd
from monai_lpuwf.transforms.scale import CheckTrainingScaled
from monai_lpuwf.transforms.uwf_registration import RegisterUWFd

__all__ = ["uwf_train_transforms", "uwf_inference_transforms", "REGISTER_TARGETS", "REGISTER_METHODS"]

REGISTER_TARGETS = ("late", "slo")
REGISTER_METHODS = {"uwf": RegisterUWFd, "elastix": RegisterElastixd}


def _register_targets(register: bool | str | Sequence[str]) -> tuple[str, ...]:
    if register is False or register is None:
        return ()
    if register is True:
        return ("late",)
    targets = tuple(str(r) for r in ensure_tuple(register))
    unknown = [t for t in targets if t not in REGISTER_TARGETS]
    if unknown:
        raise ValueError(
            f"register={register!r}: unknown target(s) {unknown}; use True (late onto early), 'late', 'slo' "
            "(SLO onto early FA) or ('late', 'slo')."
        )
    return targets


def uwf_train_transforms(
    spatial_size: int | Sequence[int],
    with_late: bool = True,
    register: bool | str | Sequence[str] = False,
    register_method: str = "uwf",
    sharpen: bool = True,
    augment: bool = True,
    crop_scale: float | None = None,
    val_resize: bool | None = None,
    rotate_deg: float = 5.0,
    flip_prob: float = 0.5,
    sharpen_kwargs: Mapping[str, Any] | None = None,
    register_kwargs: Mapping[str, Any] | None = None,
    ctrd_kwargs: Mapping[str, Any] | None = None,
    fov_kwargs: Mapping[str, Any] | None = None,
    load_kwargs: Mapping[str, Any] | None = None,
    slo_key: str = UWFKeys.SLO.value,
    early_key: str = UWFKeys.EARLY.value,
    late_key: str = UWFKeys.LATE.value,
    fov_key: str = UWFKeys.FOV.value,
    ctrd_key: str = UWFKeys.CTRD.value,
    device: str | torch.device | None = None,
) -> Compose:
    """Dictionary pipeline turning a triplet of file paths into training tensors.

    Args:
        spatial_size: output ``(H, W)`` (an int for a square).
        with_late: load the late phase and compute the CTRD map; ``False`` for SLO + early-phase lists.
        register: ``False``; ``True`` or ``"late"`` (late FA onto early FA, :class:`RegisterElastixd`, affine,
            normalised correlation); ``"slo"`` (SLO onto early FA, mutual information); or ``("late", "slo")``.
            Registration runs on the native-resolution frames, once per item when the dataset caches; with
            ``register_kwargs={"cache_dir": ...}`` its results are also cached on disk for later runs (fill the
            cache in parallel with :func:`monai_lpuwf.data.register_datalist`, which also leaves refused pairs out).
            Real frames: ``("late", "slo")``, so that the SLO, both FA phases, the field of view and the CTRD map
            share the early frame's geometry; phantoms are generated aligned and need none.
        register_method: ``"uwf"`` (default: :class:`RegisterUWFd`, vessel-based, works on real UWF pairs and
            refuses pairs it cannot align, see :mod:`~monai_lpuwf.transforms.uwf_registration`) or ``"elastix"``
            (:class:`RegisterElastixd`, intensity-based; ``register_kwargs`` then take its settings).
        sharpen: unsharp-mask the SLO (:class:`UnsharpMaskd`, at native resolution), as the paper does.
        augment: random rotation (``+/- rotate_deg``) and random crop (:class:`RandRotateCropd`: one resampling of
            the crop only) and flips (vertical and horizontal, each with ``flip_prob``), drawn once per item and
            applied identically to every key (images, fov, ctrd).
            ``False``: validation, deterministic (see ``val_resize``).
        crop_scale: ``None`` (default): crops at the native resolution, the scale generation runs at (the
            authors' recipe); frames smaller than ``spatial_size`` are padded with black (images ``-1``, fov and
            ctrd ``0``). A float: frames are resized to ``ceil(crop_scale * spatial_size)`` before the random crop.
        val_resize: with ``augment=False``: ``True`` resizes the whole frame to ``spatial_size`` (the authors'
            validation); ``False`` takes the central ``spatial_size`` crop at native resolution (padded like the
            training crops); ``None`` (default): ``False`` when ``crop_scale`` is ``None``, else ``True``.
        rotate_deg: rotation range in degrees.
        flip_prob: probability of each flip.
        sharpen_kwargs: for :class:`UnsharpMaskd` (``radius``, ``amount``, ...).
        register_kwargs: for :class:`RegisterElastixd` (``mode``, ``settings``, ``cache_dir``, ...).
        ctrd_kwargs: for :class:`CrossTemporalDifferenced` (``normalize``, ``smooth_sigma``, ...).
        fov_kwargs: for :class:`FieldOfViewd`.
        load_kwargs: for :class:`LoadUWFImaged` (``spatial_mismatch``, ``fa_colour``, ...). With ``register``,
            ``spatial_mismatch`` defaults to ``"ignore"`` (registration resamples onto the early-phase grid).
        slo_key, early_key, late_key, fov_key, ctrd_key: dictionary keys.
        device: move the deterministic result (float32) to this device before the random transforms, e.g.
            ``"cuda:0"``: a :class:`~monai.data.CacheDataset` then caches the items on the GPU and the
            augmentation runs there (load them with ``num_workers=0``, e.g. :class:`~monai.data.ThreadDataLoader`:
            worker processes cannot share CUDA tensors). ``None`` (default): no move, CPU tensors.

    Returns:
        a :class:`monai.transforms.Compose` producing ``slo`` ``(3, H, W)``, ``early`` and (``with_late``) ``late``
        ``(1, H, W)`` in ``[-1, 1]``, ``fov`` ``(1, H, W)`` in ``{0, 1}`` (field of view of the FA frames) and
        (``with_late``) ``ctrd`` ``(1, H, W)`` in ``[0, 1]``, all float32 MetaTensors. Pixels rotated in from outside
        the frame repeat the frame's (black) border in the images and are 0 in ``fov`` and ``ctrd``.
    """
    size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, 2))
    image_keys = [slo_key, early_key] + ([late_key] if with_late else [])
    fa_keys = [early_key] + ([late_key] if with_late else [])
    targets = _register_targets(register)
    if "late" in targets and not with_late:
        raise ValueError("register='late' needs with_late=True (there is no late phase to register).")
    load_kwargs = dict(load_kwargs or {})
    if targets:
        load_kwargs.setdefault("spatial_mismatch", "ignore")
    xforms: list = [LoadUWFImaged(keys=image_keys, **load_kwargs)]
    register_class = look_up_option(register_method, REGISTER_METHODS)
    for target in targets:
        moving = late_key if target == "late" else slo_key
        xforms.append(register_class(fixed_key=early_key, moving_key=moving, **dict(register_kwargs or {})))
    if sharpen:
        xforms.append(UnsharpMaskd(keys=slo_key, **dict(sharpen_kwargs or {})))
    if not augment:
        resize_to = size if (crop_scale is not None if val_resize is None else val_resize) else None
    else:
        resize_to = None if crop_scale is None else tuple(math.ceil(crop_scale * s) for s in size)
    if resize_to is not None:
        xforms.append(Resized(keys=image_keys, spatial_size=resize_to, mode="area"))  # box-averaging: no aliasing
    xforms.append(FieldOfViewd(keys=fa_keys, mask_key=fov_key, **dict(fov_kwargs or {})))
    all_keys = image_keys + [fov_key]
    if with_late:
        xforms.append(
            CrossTemporalDifferenced(early_key, late_key, ctrd_key, fov_key=fov_key, **dict(ctrd_kwargs or {}))
        )
        all_keys.append(ctrd_key)
    if resize_to is None:  # native-resolution crops: frames smaller than the crop are padded with black
        xforms += [
            SpatialPadd(keys=image_keys, spatial_size=size, mode="constant", value=-1.0),
            SpatialPadd(keys=all_keys[len(image_keys) :], spatial_size=size, mode="constant", value=0.0),
        ]
        if not augment:
            xforms.append(CenterSpatialCropd(keys=all_keys, roi_size=size))
    if device is not None:  # the last deterministic step: a CacheDataset caches the items on the device
        xforms.append(EnsureTyped(keys=all_keys, dtype=torch.float32, device=torch.device(device)))
    if augment:
        angle = math.radians(rotate_deg)
        n_img = len(image_keys)
        xforms += [
            RandRotateCropd(
                keys=all_keys,
                roi_size=size,
                rotate_range=angle,
                mode=["bilinear"] * n_img + ["nearest"] + (["bilinear"] if with_late else []),
                padding_mode=["border"] * n_img + ["zeros"] * (len(all_keys) - n_img),
            ),
            RandFlipd(keys=all_keys, prob=flip_prob, spatial_axis=0),
            RandFlipd(keys=all_keys, prob=flip_prob, spatial_axis=1),
        ]
    xforms.append(EnsureTyped(keys=all_keys, dtype=torch.float32))
    return Compose(xforms)


def uwf_inference_transforms(
    divisor: int | Sequence[int],
    sharpen: bool = True,
    keys: str | Sequence[str] = (UWFKeys.SLO.value,),
    slo_key: str = UWFKeys.SLO.value,
    sharpen_kwargs: Mapping[str, Any] | None = None,
    load_kwargs: Mapping[str, Any] | None = None,
    allow_missing_keys: bool = False,
    training_scale: Mapping[str, Any] | None = None,
    scale_tolerance: float = 1.5,
    resize_to: Sequence[int] | None = None,
) -> Compose:
    """Invertible dictionary pipeline for generation: load, sharpen the SLO, (resize it), pad to a multiple of
    ``divisor``.

    The resize and the padding (value ``-1``, the black of ``[-1, 1]`` images, split evenly on both sides) are
    recorded in the MetaTensors' ``applied_operations``, so ``Invertd(keys="pred", transform=<this Compose>,
    orig_keys="slo")`` brings a generated image back to the native ``(H, W)`` of the SLO.

    Args:
        divisor: the autoencoder's spatial downsampling factor (``LPUWFModel.size_divisor``); an int or one per
            spatial axis.
        sharpen: unsharp-mask the SLO (as for training; use the same setting as the training run).
        keys: keys holding file paths (``"slo"``; add ``"early"``/``"late"`` to load reference FA frames too).
        slo_key: the key sharpened.
        sharpen_kwargs: for :class:`UnsharpMaskd`.
        load_kwargs: for :class:`LoadUWFImaged`.
        allow_missing_keys: skip listed keys absent from an item (e.g. items without ``late``).
        training_scale: the model file's training-scale record (:attr:`ModelFile.training_scale
            <monai_lpuwf.networks.ModelFile.training_scale>`); when given, an SLO whose size or colour is far from
            the training frames' is reported with a warning (:class:`CheckTrainingScaled`).
        scale_tolerance: largest accepted ratio between an input's size and the training frames' size.
        resize_to: resize the SLO to this ``(H, W)`` after sharpening, for a model trained on frames resized to it
            (:func:`~monai_lpuwf.transforms.training_frame_size` of its record); bilinear with anti-aliasing, so
            that the inverse is a bilinear upsampling (an ``"area"`` resize would invert as nearest neighbour).
            The other keys stay at their native size. ``None``: native resolution.

    Returns:
        :class:`monai.transforms.Compose`; outputs ``(C, H', W')`` float32 MetaTensors with ``H'``, ``W'`` the
        smallest multiples of ``divisor`` not below ``H``, ``W`` (``resize_to`` for the SLO when given).
    """
    keys = [str(k) for k in ensure_tuple(keys)]
    if not keys:
        raise ValueError("uwf_inference_transforms: keys must name at least the SLO key, e.g. ('slo',).")
    xforms: list = [LoadUWFImaged(keys=keys, allow_missing_keys=allow_missing_keys, **dict(load_kwargs or {}))]
    if sharpen and slo_key in keys:
        xforms.append(UnsharpMaskd(keys=slo_key, allow_missing_keys=allow_missing_keys, **dict(sharpen_kwargs or {})))
    if resize_to is not None and slo_key in keys:  # as training: sharpened at the native size, then resized
        size = tuple(int(v) for v in ensure_tuple_rep(resize_to, 2))
        xforms.append(Resized(keys=slo_key, spatial_size=size, mode="bilinear", anti_aliasing=True,
                              allow_missing_keys=allow_missing_keys))  # fmt: skip
    if training_scale is not None and slo_key in keys:  # the SLO as the model sees it (size; colour is kept)
        xforms.append(CheckTrainingScaled(slo_key, training_scale, tolerance=scale_tolerance,
                                          allow_missing_keys=allow_missing_keys))  # fmt: skip
    xforms.append(
        DivisiblePadd(keys=keys, k=divisor, mode="constant", value=-1.0, allow_missing_keys=allow_missing_keys)
    )
    xforms.append(EnsureTyped(keys=keys, dtype=torch.float32, allow_missing_keys=allow_missing_keys))
    return Compose(xforms)
