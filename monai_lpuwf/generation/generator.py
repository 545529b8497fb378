"""Generation behind one call: a trained model file's inference transforms, sampler, inverse and writer.

The bundle's ``inference.json``, the MONAI Label task and the MONAI Deploy operator all build a :class:`Generator`,
so they load, pad, sample, crop back and write the same way, at the same sampling settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor, decollate_batch
from monai.transforms import Compose, CopyItemsd, DeleteItemsd, Invertd, SplitDimd
from monai.utils import ensure_tuple
from torch import nn

from monai_lpuwf.generation.model import generation_network
from monai_lpuwf.inferers import INFERENCE_DEFAULTS, LPUWFInferer, LPUWFSampler
from monai_lpuwf.keys import UWFKeys
from monai_lpuwf.networks import ModelFile, check_device
from monai_lpuwf.transforms import save_generated, training_frame_size, uwf_inference_transforms

__all__ = ["SAMPLING_KEY", "SamplingRecord", "recommended_sampling", "Generator"]

#: Checkpoint entry holding the sampling settings recommended for a model (:class:`SamplingRecord`).
SAMPLING_KEY = "sampling"


class SamplingRecord:
    """Checkpoint entry ``"sampling"``: the sampling settings recommended for a model, e.g.
    ``{"conditioning_scale": 2.0}`` (the ControlNet residuals doubled, as the quick start samples its model).

    Listed in a training config's model dictionary (``{"model": ..., "config": ..., "sampling": record}``), it is
    saved with the weights; :func:`recommended_sampling` and :meth:`Generator.from_file` take it from the
    :class:`~monai_lpuwf.networks.ModelFile` (:attr:`~monai_lpuwf.networks.ModelFile.sampling`). Keys are those
    of :data:`monai_lpuwf.inferers.INFERENCE_DEFAULTS`; the others are refused.

    Args:
        settings: the recommended settings (``conditioning_scale``, ``num_inference_steps``, ...).

    Raises:
        ValueError: a key that is not a sampling setting.
    """

    def __init__(self, **settings: Any) -> None:
        self._state: dict[str, Any] = {}
        self.load_state_dict(settings)

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - set(INFERENCE_DEFAULTS))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not sampling settings; a recommendation holds {', '.join(INFERENCE_DEFAULTS)}."
            )
        self._state = dict(state)


def recommended_sampling(model_file: ModelFile | str | os.PathLike | None = None) -> dict[str, Any]:
    """:data:`~monai_lpuwf.inferers.INFERENCE_DEFAULTS` updated with the model file's :class:`SamplingRecord`.

    Args:
        model_file: a :class:`~monai_lpuwf.networks.ModelFile` (the bundle's ``model_file``, read once), or the path
            of one (read with :meth:`ModelFile.load <monai_lpuwf.networks.ModelFile.load>`); ``None``, a path that
            does not exist or a file without the record: the defaults.

    Raises:
        ValueError: the record holds a key that is not a sampling setting.
    """
    if model_file is not None and not isinstance(model_file, ModelFile):
        model_file = ModelFile.load(model_file) if os.path.isfile(model_file) else None
    sampling = model_file.sampling if model_file is not None else None
    return {**INFERENCE_DEFAULTS, **SamplingRecord(**dict(sampling or {})).state_dict()}


class Generator:
    """Late-phase FA from a UWF-SLO with a trained model: inference transforms, sampler, inverse and writer.

    ``generator(slo)`` loads the SLO (a file path or a dictionary ``{"slo": path, ...}``), unsharp-masks it, resizes
    it to the training frames' size if the model was trained on resized frames, and pads it with -1 to the model's
    size divisor (:func:`~monai_lpuwf.transforms.uwf_inference_transforms`), samples the
    late phase (:class:`~monai_lpuwf.inferers.LPUWFInferer`), undoes the padding (and resize) with
    :class:`monai.transforms.Invertd` and returns the (1, H, W) prediction in [-1, 1] with the SLO's height, width
    and metadata. The parts are attributes too (:attr:`transforms`, :attr:`inferer`, :meth:`inverse`,
    :meth:`post_transforms`, :meth:`writers`), for an engine that batches the images itself (the bundle's
    ``SupervisedEvaluator``).

    The sampling settings (:attr:`settings`) are, from lowest to highest priority,
    :data:`~monai_lpuwf.inferers.INFERENCE_DEFAULTS`, the model file's recommendation (``sampling``:
    :class:`SamplingRecord`) and the keyword arguments given here; a keyword argument of ``None`` keeps the value
    below it.

    Args:
        network: the trained model (an :class:`~monai_lpuwf.networks.LPUWFModel` or another generation model with
            ``size_divisor``), moved to ``device`` and put in eval mode.
        device: where to sample; ``None``: CUDA when available, else the CPU.
        recommended: the model's recommended sampling settings (:attr:`ModelFile.sampling
            <monai_lpuwf.networks.ModelFile.sampling>`, a :class:`SamplingRecord`).
        training_scale: the model file's training-scale record (:attr:`ModelFile.training_scale
            <monai_lpuwf.networks.ModelFile.training_scale>`; warns about inputs far from the training frames). A
            model trained on resized frames (the record's ``crop_scale``) generates at their size: the SLO is
            resized to it (:func:`~monai_lpuwf.transforms.training_frame_size`) and the prediction back to the
            SLO's native size by :meth:`inverse`.
        scale_tolerance: see :func:`~monai_lpuwf.transforms.uwf_inference_transforms`.
        sharpen: unsharp-mask the SLO (use the training run's setting).
        sharpen_kwargs: :class:`~monai_lpuwf.transforms.UnsharpMaskd` arguments.
        keys: the keys loaded by :attr:`transforms` (``"slo"``, plus ``"early"``/``"late"`` to load references).
        load_kwargs: :class:`~monai_lpuwf.transforms.LoadUWFImaged` arguments.
        with_std: also return the per-pixel standard deviation over the draws (``pred_std``); ``None``: when
            ``num_samples > 1``.
        progress: a progress bar over the denoising steps.
        id_key: see :class:`~monai_lpuwf.inferers.LPUWFInferer`.
        inferer: a ready :class:`~monai_lpuwf.inferers.LPUWFInferer` (the bundle's ``inferer``, whose settings the
            config resolves with :func:`recommended_sampling`) instead of ``overrides``, ``with_std``, ``progress``
            and ``id_key``.
        overrides: sampling settings (``scheduler``, ``num_inference_steps``, ``num_samples``, ``seed``, ``eta``,
            ``clip_sample``, ``conditioning_scale``, ``t_start``, ``flip_average``) and other
            :class:`~monai_lpuwf.inferers.LPUWFSampler` arguments (tiling: ``decode_tile``, ``denoise_tile``,
            ``tile_policy``, ``memory_limit``...).

    Raises:
        ValueError: ``inferer`` given together with ``overrides``, ``with_std``, ``progress`` or ``id_key``; a key of
            ``recommended`` that is not a sampling setting; sampler arguments :class:`LPUWFSampler` refuses.

    Example::

        generator = Generator.from_file("bundle/models/model.pt", num_inference_steps=50)
        fa = generator("slo.png")  # (1, H, W) MetaTensor in [-1, 1]
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        device: str | torch.device | None = None,
        recommended: Mapping[str, Any] | None = None,
        training_scale: Mapping[str, Any] | None = None,
        scale_tolerance: float = 1.5,
        sharpen: bool = True,
        sharpen_kwargs: Mapping[str, Any] | None = None,
        keys: str | Sequence[str] = (UWFKeys.SLO.value,),
        load_kwargs: Mapping[str, Any] | None = None,
        with_std: bool | None = None,
        progress: bool = False,
        id_key: str | None = None,
        inferer: LPUWFInferer | None = None,
        **overrides: Any,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = network.to(self.device).eval()
        self.recommended = SamplingRecord(**dict(recommended or {})).state_dict()
        self.keys = [str(k) for k in ensure_tuple(keys)]
        self.options = {"with_std": with_std, "progress": bool(progress), "id_key": id_key}
        given = {k: v for k, v in overrides.items() if v is not None}
        if inferer is not None:
            if given or with_std is not None or progress or id_key is not None:
                raise ValueError("give either an inferer or sampling settings (with_std, progress...), not both.")
            self.inferer = inferer
            self.sampler = inferer.sampler
            self.with_std = bool(inferer.with_std)
            self.settings = {k: getattr(self.sampler, k) for k in INFERENCE_DEFAULTS}
            self.sampler_kwargs = dict(self.settings)
        else:
            settings = {k: v for k, v in given.items() if k in INFERENCE_DEFAULTS}
            self.settings = {**INFERENCE_DEFAULTS, **self.recommended, **settings}
            self.sampler_kwargs = {**self.settings, **given}  # the settings and the other sampler arguments
            self.sampler = LPUWFSampler(**self.sampler_kwargs, progress=bool(progress))
            self.with_std = self.sampler.num_samples > 1 if with_std is None else bool(with_std)
            self.inferer = LPUWFInferer(self.sampler, with_std=self.with_std, id_key=id_key)
        self.transforms: Compose = uwf_inference_transforms(
            divisor=self.network.size_divisor,
            sharpen=bool(sharpen),
            sharpen_kwargs=sharpen_kwargs,
            keys=self.keys,
            load_kwargs=load_kwargs,
            allow_missing_keys=True,
            training_scale=training_scale,
            scale_tolerance=scale_tolerance,
            resize_to=training_frame_size(training_scale),
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike | ModelFile,
        device: str | torch.device | None = None,
        preset: str | None = None,
        network_overrides: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Generator:
        """A generator for a bundle model file (``models/model.pt``), at the file's recommended settings.

        The file is read once by :meth:`ModelFile.load <monai_lpuwf.networks.ModelFile.load>` (or given already
        read), checked and built by :func:`~monai_lpuwf.generation.model.generation_network`; its
        :class:`SamplingRecord` and training-scale record come from the same :class:`~monai_lpuwf.networks.ModelFile`.

        Args:
            path: the model file, or its :class:`~monai_lpuwf.networks.ModelFile` (the bundle's ``model_file``,
                which the evaluation reads the constant baseline from too).
            device: see :class:`Generator`; a CUDA device on a machine without CUDA is refused first
                (:func:`~monai_lpuwf.networks.check_device`).
            preset, network_overrides: for a bare state dict, see
                :func:`~monai_lpuwf.generation.model.generation_network`.
            kwargs: the other arguments of :class:`Generator` (settings given here override the file's).

        Raises:
            FileNotFoundError, ModelFileError, InferenceInputError: see :meth:`~monai_lpuwf.networks.ModelFile.load`
                and :func:`~monai_lpuwf.generation.model.generation_network`.
        """
        device = check_device(device or None) or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(path, ModelFile):
            model_file = path
        else:
            model_file = ModelFile.load(path, map_location=device, purpose="generation")
        network = generation_network(model_file, preset=preset, network_overrides=network_overrides)
        kwargs.setdefault("training_scale", model_file.training_scale)
        return cls(network, device=device, recommended=model_file.sampling, **kwargs)

    def with_settings(self, **overrides: Any) -> Generator:
        """This generator (same network, same transforms) with other sampling settings (``None`` keeps one)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        options = {k: given.pop(k) for k in list(given) if k in self.options}
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.options = {**self.options, **options}
        new.settings = {**self.settings, **{k: v for k, v in given.items() if k in INFERENCE_DEFAULTS}}
        new.sampler_kwargs = {**self.sampler_kwargs, **given}
        new.sampler = LPUWFSampler(**new.sampler_kwargs, progress=new.options["progress"])
        with_std = new.options["with_std"]
        new.with_std = new.sampler.num_samples > 1 if with_std is None else bool(with_std)
        new.inferer = LPUWFInferer(new.sampler, with_std=new.with_std, id_key=new.options["id_key"])
        return new

    def inverse(self, keys: str | Sequence[str] = ("pred",), orig_keys: str | Sequence[str] | None = None) -> Invertd:
        """:class:`~monai.transforms.Invertd` of :attr:`transforms`: crops ``keys`` (by default ``"pred"``, (C, H', W'))
        back to the native (C, H, W) of ``orig_keys`` (by default ``"slo"`` for each key)."""
        keys = list(ensure_tuple(keys))
        orig = list(ensure_tuple(orig_keys)) if orig_keys is not None else [UWFKeys.SLO.value] * len(keys)
        return Invertd(keys=keys, transform=self.transforms, orig_keys=orig, nearest_interp=False,
                       allow_missing_keys=True)  # fmt: skip

    def split_std(self) -> list:
        """With :attr:`with_std`: transforms splitting ``pred`` (2, H, W) into ``pred`` and ``pred_std`` (1, H, W)."""
        if not self.with_std:
            return []
        return [
            SplitDimd(keys="pred", output_postfixes=["mean", "std"], update_meta=False),
            DeleteItemsd(keys="pred"),
            CopyItemsd(keys="pred_mean", names="pred"),
            DeleteItemsd(keys="pred_mean"),
        ]

    def writers(
        self,
        output_dir: str | os.PathLike,
        output_postfix: str = "late",
        output_ext: str = ".png",
        output_dtype: str = "uint8",
        data_root_dir: str | os.PathLike = "",
        std_postfix: str | None = None,
    ) -> list:
        """Transforms writing ``pred`` (and, with :attr:`with_std`, ``pred_std`` in [0, 1]) beside each other as
        ``<output_dir>/<SLO name>_<output_postfix><output_ext>`` (see :func:`~monai_lpuwf.transforms.save_generated`).
        """
        std_postfix = f"{output_postfix}_std" if std_postfix is None else std_postfix
        writers = [save_generated("pred", output_dir, output_postfix, output_ext, output_dtype, data_root_dir)]
        if self.with_std:
            writers.append(save_generated("pred_std", output_dir, std_postfix, output_ext, output_dtype,
                                          data_root_dir, value_range=(0.0, 1.0)))  # fmt: skip
        return writers

    def post_transforms(self, writers: Sequence = ()) -> Compose:
        """:meth:`inverse` (the prediction and the loaded keys), :meth:`split_std`, then ``writers``."""
        keys = ["pred", *self.keys]
        return Compose([self.inverse(keys, [UWFKeys.SLO.value, *self.keys]), *self.split_std(), *writers])

    def preprocess(self, slo: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
        """:attr:`transforms` of a path or of a dictionary holding one under ``"slo"``; ``"slo"``: (3, H', W')."""
        data = dict(slo) if isinstance(slo, Mapping) else {UWFKeys.SLO.value: os.fspath(slo)}
        return dict(self.transforms(data))

    def sample(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with ``"pred"``: the sampler's output for ``data["slo"]`` (3, H', W'), (1, H', W') or, with
        :attr:`with_std`, (2, H', W') (prediction, standard deviation), on the CPU, with the SLO's metadata."""
        slo = data[UWFKeys.SLO.value]
        with torch.no_grad():
            pred = self.inferer(slo[None].to(self.device), self.network)
        if isinstance(pred, MetaTensor):
            pred = decollate_batch(pred.cpu())[0]
        else:
            pred = MetaTensor(pred[0].cpu(), meta=dict(getattr(slo, "meta", {})),
                              applied_operations=list(getattr(slo, "applied_operations", [])))  # fmt: skip
        return {**data, "pred": pred}

    def generate(self, slo: str | os.PathLike | Mapping[str, Any], writers: Sequence = ()) -> dict[str, Any]:
        """:meth:`preprocess`, :meth:`sample` and :meth:`post_transforms`: the data dictionary with ``"pred"``
        (1, H, W) in [-1, 1] and, with :attr:`with_std`, ``"pred_std"`` (1, H, W), at the SLO's native size."""
        return dict(self.post_transforms(writers)(self.sample(self.preprocess(slo))))

    def __call__(self, slo: str | os.PathLike | Mapping[str, Any]) -> MetaTensor:
        """The generated late-phase FA (1, H, W) in [-1, 1] of an SLO file (or ``{"slo": path}``)."""
        return self.generate(slo)["pred"]
