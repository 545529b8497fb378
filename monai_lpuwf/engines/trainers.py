"""Ignite/MONAI trainers for the four LPUWF-LDM training stages.

All stages share one iteration mechanism, :meth:`LPUWFTrainer._iteration` (prepare batch, forward under
autocast, accumulation-aware backward, gradient clipping, optimiser step, auxiliary updates such as a
discriminator, MONAI :class:`~monai.engines.IterationEvents`); a stage only says what its losses are:

=========================== ============================================================ ========================
stage                        trainer / network called                                     loss
=========================== ============================================================ ========================
(1) FA autoencoder           :class:`AutoencoderGanTrainer`, ``model.autoencoder``        L1 + KL + adversarial
(2) gated SLO encoder        :class:`AutoencoderGanTrainer` (``cond`` = SLO, AE frozen)   MSE + adversarial
(3) early-phase diffusion    :class:`LatentDiffusionTrainer`, ``model`` (``denoise``)      MSE on the noise
(4) late-phase fine-tuning   :class:`LatentDiffusionTrainer`                              CTRD loss
prior (SLO -> late)          :class:`SupervisedTranslationTrainer`, ``prior``             L1 (+ terms)
residual diffusion           :class:`LatentDiffusionTrainer` on the prior's residual      MSE on the residual
=========================== ============================================================ ========================

The network each trainer calls is the module whose ``forward`` does the stage's work, so that wrapping it in
:class:`torch.nn.parallel.DistributedDataParallel` (``multi_gpu_train.json``) synchronises the right gradients.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.losses import PatchAdversarialLoss
from monai.utils import CommonKeys as Keys
from monai.utils import ensure_tuple
from torch import nn
from torch.optim import Optimizer

from monai_lpuwf.engines.prepare_batch import AutoencoderPrepareBatch

__all__ = [
    "LPUWFTrainer",
    "AutoencoderGanTrainer",
    "LatentDiffusionTrainer",
    "SupervisedTranslationTrainer",
    "kl_divergence",
    "loss_terms",
    "set_trainable",
    "trainable_parameters",
    "warmup_cosine",
]


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(z_mu, z_sigma^2)`` from ``N(0, 1)``, summed over latent elements, averaged over the batch.

    ``0.5 * sum(mu^2 + sigma^2 - log(sigma^2) - 1)`` per sample, as in the MONAI generative tutorials and the
    authors' ``posterior.kl().mean()``.
    """
    dims = list(range(1, z_mu.ndim))
    kl = 0.5 * torch.sum(z_mu.float().pow(2) + z_sigma.float().pow(2) - torch.log(z_sigma.float().pow(2)) - 1, dim=dims)
    return kl.mean()


def set_trainable(
    module: nn.Module, trainable: str | Sequence[str] = (), frozen: str | Sequence[str] = ()
) -> nn.Module:
    """Freeze ``module`` except the sub-modules named in ``trainable``, then freeze those named in ``frozen``.

    Args:
        module: e.g. an :class:`~monai_lpuwf.networks.LPUWFModel`.
        trainable: qualified sub-module names (``"autoencoder"``, ``"unet"``, ``"autoencoder.condition_encoder"``);
            ``""`` is the module itself.
        frozen: sub-modules frozen again inside the trainable ones.

    Returns:
        ``module``.

    Raises:
        KeyError: a name that is not a sub-module, listing the top-level children.
    """
    module.requires_grad_(False)
    names = dict(module.named_modules())
    for flag, selected in ((True, trainable), (False, frozen)):
        for name in ensure_tuple(selected):
            if name not in names:
                children = [n for n, _ in module.named_children()]
                raise KeyError(f"{name!r} is not a sub-module of {type(module).__name__} (children: {children}).")
            names[name].requires_grad_(flag)
    return module


def trainable_parameters(
    *modules: nn.Module, lr_multipliers: Mapping[str, float] | None = None, lr: float | None = None
) -> list[nn.Parameter] | list[dict[str, Any]]:
    """The parameters with ``requires_grad`` of ``modules`` (each once), for an optimiser.

    Args:
        modules: the modules whose trainable parameters are collected.
        lr_multipliers: optional learning-rate multipliers per sub-module, by qualified name within ``modules``
            (e.g. ``{"controlnet": 6.0}``); the parameters under a name get ``lr * multiplier`` (the longest
            matching name wins), the others the optimiser's ``lr``.
        lr: the base learning rate (required with ``lr_multipliers``).

    Returns:
        a list of parameters, or, with ``lr_multipliers``, PyTorch parameter groups (``[{"params": [...]},
        {"params": [...], "lr": lr * m}, ...]``; empty groups left out).

    Raises:
        ValueError: no trainable parameter; ``lr_multipliers`` without ``lr``.
        KeyError: a name of ``lr_multipliers`` that names no parameter of ``modules``.
    """
    mults = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
    if mults and lr is None:
        raise ValueError("lr_multipliers needs the base learning rate: trainable_parameters(..., lr=...).")
    seen: set[int] = set()
    used: set[str] = set()
    groups: dict[str, list[nn.Parameter]] = {"": []}
    for m in modules:
        for name, p in m.named_parameters():
            hits = [k for k in mults if name == k or name.startswith(k + ".")]
            used.update(hits)
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                groups.setdefault(max(hits, key=len) if hits else "", []).append(p)
    if unknown := sorted(set(mults) - used):
        children = sorted({n for m in modules for n, _ in m.named_children()})
        raise KeyError(f"lr_multipliers name(s) {unknown} match no parameter (top-level sub-modules: {children}).")
    if not seen:
        raise ValueError("no trainable parameter: check 'trainable_modules' / 'frozen_modules' of the stage config.")
    if not mults:
        return groups[""]
    return [{"params": ps} if k == "" else {"params": ps, "lr": lr * mults[k]} for k, ps in groups.items() if ps]


def warmup_cosine(warmup_iterations: int = 0, total_iterations: int | None = None) -> Callable[[int], float]:
    """Learning-rate factor for :class:`torch.optim.lr_scheduler.LambdaLR`: a linear warm-up over
    ``warmup_iterations``, then (with ``total_iterations``) a cosine decay to 0 at ``total_iterations``.

    ``factor(it) = min(1, (it + 1) / warmup) * 0.5 * (1 + cos(pi * min(it, total) / total))``; without
    ``total_iterations`` only the warm-up (the stages' default schedule).
    """
    warm = max(1, int(warmup_iterations))
    total = None if not total_iterations else int(total_iterations)

    def factor(it: int) -> float:
        value = min(1.0, (it + 1) / warm)
        if total is not None:
            value *= 0.5 * (1.0 + math.cos(math.pi * min(it, total) / total))
        return value

    return factor


def loss_terms(output: Any) -> dict[str, float]:
    """The scalar loss entries (``loss`` and ``loss_*``) of a trainer output, as floats.

    For the Stats/TensorBoard handlers.
    """
    if isinstance(output, list):  # decollated output: every item carries the same scalars
        output = output[0]
    return {
        str(k): float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)
        for k, v in output.items()
        if k == Keys.LOSS or str(k).startswith("loss_")
    }


class LPUWFTrainer(SupervisedTrainer):
    """Shared training iteration of the LPUWF-LDM stages (a :class:`monai.engines.SupervisedTrainer`).

    One iteration: ``prepare_batch`` -> :meth:`compute_losses` under autocast -> backward of ``output["loss"]``
    (divided by ``accumulation_steps``) -> optional gradient clipping -> ``optimizer.step()`` on accumulation
    boundaries -> :meth:`auxiliary_update` (e.g. the discriminator) -> ``IterationEvents.MODEL_COMPLETED``.
    Subclasses implement :meth:`compute_losses` only (and :meth:`auxiliary_update` when they own a second
    optimiser); the optimisation mechanics live here once.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function, prepare_batch: as
            :class:`~monai.engines.SupervisedTrainer`.
        amp: mixed precision (``torch.autocast``). The dtype comes from ``amp_kwargs={"dtype": torch.bfloat16 |
            torch.float16}`` (default float16, which uses a gradient scaler; bfloat16 does not need one). Honoured
            on CUDA, and on CPU with bfloat16 (PyTorch's CPU autocast; slower than float32 on most CPUs, useful to
            check a run before it goes to a GPU); otherwise a warning is given and it is switched off. Networks
            prepared with :func:`monai_lpuwf.networks.optimize_for_device` also run their GroupNorms in bfloat16.
        accumulation_steps: mini-batches per optimiser step (gradient accumulation), as in SupervisedTrainer.
        grad_clip_norm: clip the global gradient norm of each optimiser's parameters to this value (None = off).
        decollate: defaults to ``False`` here (the outputs are latents and losses, not images to post-process).
        optim_set_to_none: defaults to ``True``.
        kwargs: any other :class:`~monai.engines.SupervisedTrainer` argument (``train_handlers``,
            ``epoch_length``, ``key_train_metric``, ...).

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (detached) and the detached scalar losses
    ``loss`` and ``loss_<term>``; use :func:`loss_terms` as a handler ``output_transform``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        prepare_batch: Callable,
        amp: bool = False,
        accumulation_steps: int = 1,
        grad_clip_norm: float | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = True,
        **kwargs: Any,
    ) -> None:
        device = torch.device(device)
        amp_dtype = (kwargs.get("amp_kwargs") or {}).get("dtype", torch.float16)
        if amp and device.type != "cuda" and not (device.type == "cpu" and amp_dtype == torch.bfloat16):
            warnings.warn(
                f"AMP with {amp_dtype} was requested on device {device}; mixed precision is used on CUDA, and on "
                "CPU with bfloat16 only: running in float32.",
                stacklevel=2,
            )
            amp = False
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            prepare_batch=prepare_batch,
            amp=amp,
            accumulation_steps=accumulation_steps,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            **kwargs,
        )
        self.grad_clip_norm = grad_clip_norm

    # ----------------------------------------------------------------------------------------------- hooks
    def compute_losses(self, batch: tuple) -> dict[str, Any]:
        """Forward pass of one batch; returns a dict with ``Keys.LOSS`` (the tensor to back-propagate) and more."""
        raise NotImplementedError(f"{self.__class__.__name__} must implement compute_losses.")

    def auxiliary_update(self, batch: tuple, output: dict[str, Any], zero_grad: bool, step: bool) -> None:
        """Updates after the main optimiser (e.g. a discriminator); use :meth:`backward` and :meth:`optimizer_step`."""

    # ----------------------------------------------------------------------------------------- mechanics
    def run(self) -> None:  # type: ignore[override]
        """Run training (a float16 gradient scaler is created only for float16 AMP on CUDA)."""
        dtype = self.amp_kwargs.get("dtype", torch.float16)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp and dtype == torch.float16 else None
        Workflow.run(self)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context of this trainer (a no-op without AMP)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.state.device.type, **self.amp_kwargs)

    def accumulation_schedule(self) -> tuple[bool, bool]:
        """``(zero_grad, step)`` for the current iteration under gradient accumulation (as SupervisedTrainer)."""
        acc = self.accumulation_steps
        if acc == 1:
            return True, True
        epoch_length = self.state.epoch_length
        local_iter = (self.state.iteration - 1) % epoch_length if epoch_length else self.state.iteration - 1
        last = epoch_length is not None and (local_iter + 1) == epoch_length
        return local_iter % acc == 0, (local_iter + 1) % acc == 0 or last

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss / accumulation_steps`` (scaled under float16 AMP)."""
        loss = loss / self.accumulation_steps if self.accumulation_steps > 1 else loss
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip (if configured) and apply one optimiser step."""
        if self.grad_clip_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def _iteration(self, engine: LPUWFTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        zero_grad, step = engine.accumulation_schedule()
        engine.network.train()
        if zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine.autocast():
            output = engine.compute_losses(batch)
        engine.state.output = output
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.backward(output[Keys.LOSS])
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if step:
            engine.optimizer_step(engine.optimizer)
        engine.auxiliary_update(batch, output, zero_grad, step)
        if step and engine.scaler is not None:
            engine.scaler.update()
        for key, value in output.items():
            if isinstance(value, torch.Tensor):
                output[key] = value.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return output


class AutoencoderGanTrainer(LPUWFTrainer):
    """Stages (1) and (2): autoencoder reconstruction with KL, optional perceptual and patch-adversarial terms.

    Generator loss ``L = rec(x_hat, x) + kl_weight * KL + perceptual_weight * P(x_hat, x)
    + adversarial_weight * adv_G(D(x_hat))``, the adversarial term from epoch ``adversarial_warmup_epochs + 1``
    on; the discriminator then minimises ``adversarial_weight * (adv_D(D(x_hat), fake) + adv_D(D(x), real)) / 2``
    (the authors' weighting). Stage 1 trains the FA autoencoder (``cond`` absent, L1, ``kl_weight=1e-6``);
    stage 2 trains only the gated SLO encoder (``prepare_batch`` with ``condition_key="slo"``, the FA autoencoder
    frozen with ``requires_grad_(False)``, MSE, ``kl_weight=0``).

    Args:
        network: the (conditional) autoencoder, ``forward(x, cond=None) -> (recon, z_mu, z_sigma)``
            (``LPUWFModel.autoencoder``, possibly DDP-wrapped).
        optimizer: optimiser of the trained parameters (all autoencoder parameters, or the gated encoder's).
        loss_function: reconstruction loss, e.g. ``torch.nn.L1Loss()`` or ``torch.nn.MSELoss()``.
        discriminator: a :class:`monai.networks.nets.PatchDiscriminator` (or None for no adversarial term).
        d_optimizer: the discriminator's optimiser.
        adversarial_loss: defaults to ``PatchAdversarialLoss(criterion="least_squares")``.
        adversarial_weight: weight of the adversarial terms (0.01 in the paper's code).
        adversarial_warmup_epochs: epochs without adversarial terms.
        kl_weight: weight of the KL term (1e-6 in stage 1, 0 in stage 2).
        perceptual_loss: optional ``loss(pred, target)`` such as
            ``monai_lpuwf.losses.perceptual.OfflinePerceptualLoss`` (local weights only).
        perceptual_weight: its weight (0.001 in the paper's code).
        prepare_batch: defaults to :class:`AutoencoderPrepareBatch` (early or late phase, no condition).
        kwargs: passed to :class:`LPUWFTrainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        discriminator: nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        adversarial_loss: Callable | None = None,
        adversarial_weight: float = 0.01,
        adversarial_warmup_epochs: int = 0,
        kl_weight: float = 1e-6,
        perceptual_loss: Callable | None = None,
        perceptual_weight: float = 0.001,
        prepare_batch: Callable | None = None,
        **kwargs: Any,
    ) -> None:
        if (discriminator is None) != (d_optimizer is None):
            raise ValueError(
                "discriminator and d_optimizer must be given together (or neither, for no adversarial term)."
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=torch.nn.L1Loss() if loss_function is None else loss_function,
            prepare_batch=AutoencoderPrepareBatch() if prepare_batch is None else prepare_batch,
            **kwargs,
        )
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.adversarial_loss = (
            PatchAdversarialLoss(criterion="least_squares") if adversarial_loss is None else adversarial_loss
        )
        self.adversarial_weight = adversarial_weight
        self.adversarial_warmup_epochs = adversarial_warmup_epochs
        self.kl_weight = kl_weight
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = perceptual_weight

    @property
    def adversarial_active(self) -> bool:
        """Whether the adversarial terms are on in the current epoch."""
        return (
            self.discriminator is not None
            and self.adversarial_weight > 0
            and self.state.epoch > self.adversarial_warmup_epochs
        )

    def compute_losses(self, batch: tuple) -> dict[str, Any]:
        images, targets, args, kwargs = batch
        recon, z_mu, z_sigma = self.network(images, *args, **kwargs)
        loss_rec = self.loss_function(recon.float(), targets.float())
        output: dict[str, Any] = {Keys.IMAGE: images, Keys.LABEL: targets, Keys.PRED: recon, "loss_rec": loss_rec}
        loss = loss_rec
        if self.kl_weight > 0:
            output["loss_kl"] = kl_divergence(z_mu, z_sigma)
            loss = loss + self.kl_weight * output["loss_kl"]
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            output["loss_perceptual"] = self.perceptual_loss(recon.float(), targets.float())
            loss = loss + self.perceptual_weight * output["loss_perceptual"]
        if self.adversarial_active:
            self.discriminator.train()
            logits_fake = self.discriminator(recon.contiguous().float())[-1]
            output["loss_adv"] = self.adversarial_loss(logits_fake, target_is_real=True, for_discriminator=False)
            loss = loss + self.adversarial_weight * output["loss_adv"]
        output[Keys.LOSS] = loss
        return output

    def auxiliary_update(self, batch: tuple, output: dict[str, Any], zero_grad: bool, step: bool) -> None:
        if not self.adversarial_active:
            return
        if zero_grad:
            self.d_optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        with self.autocast():
            logits_fake = self.discriminator(output[Keys.PRED].detach().contiguous().float())[-1]
            loss_fake = self.adversarial_loss(logits_fake, target_is_real=False, for_discriminator=True)
            logits_real = self.discriminator(output[Keys.LABEL].detach().contiguous().float())[-1]
            loss_real = self.adversarial_loss(logits_real, target_is_real=True, for_discriminator=True)
            loss_d = self.adversarial_weight * 0.5 * (loss_fake + loss_real)
        self.backward(loss_d)
        if step:
            self.optimizer_step(self.d_optimizer)
        output["loss_disc"] = loss_d


class LatentDiffusionTrainer(LPUWFTrainer):
    """Stages (3) and (4): epsilon-prediction training of U-Net + ControlNet on scaled FA latents.

    ``x_t = scheduler.add_noise(z, noise, t)``, ``pred = network(x_t, t, slo)`` and
    ``loss = loss_function(pred, noise[, weight_map=..., mask=...])``: ``torch.nn.MSELoss()`` in stage 3,
    :class:`monai_lpuwf.losses.CTRDLoss` with the cross-temporal difference map in stage 4.

    Args:
        network: the denoiser, ``forward(x_t, timesteps, slo) -> prediction``: the
            :class:`~monai_lpuwf.networks.LPUWFModel` itself (its ``forward`` is ``denoise``), possibly DDP-wrapped
            (the frozen autoencoder has ``requires_grad=False`` and is ignored by DDP).
        optimizer: optimiser of U-Net and ControlNet parameters (the authors use two Adam optimisers with one
            learning rate, which is the same as one Adam over both parameter sets).
        loss_function: ``loss(pred, target)``, or ``loss(pred, target, weight_map=..., mask=...)`` when the
            ``prepare_batch`` provides those.
        scheduler: the training noise scheduler (``add_noise``), e.g. :class:`monai.networks.schedulers.DDPMScheduler`.
        prepare_batch: a :class:`~monai_lpuwf.engines.LatentDiffusionPrepareBatch`.
        kwargs: passed to :class:`LPUWFTrainer`.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        scheduler: Any,
        prepare_batch: Callable,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            prepare_batch=prepare_batch,
            **kwargs,
        )
        self.scheduler = scheduler

    def compute_losses(self, batch: tuple) -> dict[str, Any]:
        latents, target, _, kwargs = batch
        noise, timesteps = kwargs["noise"], kwargs["timesteps"]
        noisy = self.scheduler.add_noise(original_samples=latents, noise=noise, timesteps=timesteps)
        pred = self.network(noisy, timesteps, kwargs["condition"])
        loss_kwargs = {k: kwargs[k] for k in ("weight_map", "mask") if k in kwargs}
        loss = self.loss_function(pred.float(), target.float(), **loss_kwargs)
        return {Keys.IMAGE: latents, Keys.LABEL: target, Keys.PRED: pred, Keys.LOSS: loss}


class SupervisedTranslationTrainer(LPUWFTrainer):
    """The supervised prior's stage: ``pred = network(slo)``, ``loss = loss_function(pred, late)``.

    Args:
        network: the translator, ``forward(slo) -> late`` (:class:`~monai_lpuwf.networks.SupervisedPrior`).
        loss_function: ``loss(pred, target)``, e.g. ``torch.nn.L1Loss()``; a loss that returns a dict of named
            terms (``{"loss": total, "loss_l1": ..., ...}``) has every term logged.
        prepare_batch: ``(slo, late, (), {})``, e.g. ``KeyedPrepareBatch(image_key="slo", label_key="late")``.
        other arguments: as :class:`LPUWFTrainer`.
    """

    def compute_losses(self, batch: tuple) -> dict[str, Any]:
        inputs, targets = batch[0], batch[1]
        pred = self.network(inputs)
        loss = self.loss_function(pred.float(), targets.float())
        terms = dict(loss) if isinstance(loss, Mapping) else {Keys.LOSS: loss}
        return {Keys.IMAGE: inputs, Keys.LABEL: targets, Keys.PRED: pred, **terms}
