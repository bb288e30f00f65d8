"""One CycleGAN optimisation step: generators, then discriminators on replayed fakes.

Kept apart from the training loop so ``cyclegan-bench train`` times exactly the step the
trainer runs, and so it can be tested without Accelerate or DALI: it is a plain callable
over (models, optimizers, buffers) and a batch.

Nothing in a step reads a device value into Python, so on a GPU the host queues step after
step while the device works. The one decision a step makes, "was any loss or gradient
non-finite on any process?", stays on the device: the flag is all-reduced with MAX (so it is exactly 0.0 or 1.0,
the only values the fused Adam kernels accept) and handed to both fused optimizers as their
``found_inf``, which turns their update into a no-op on the device. Every process then moves
its weights, or not, in lockstep. With fp16 the GradScaler decides per optimizer from the
gradients, so the flag is shown to it as one poisoned gradient element in each optimizer: both
skip together, and the scale is updated once per step, after both optimizers.

The generator update is applied after the discriminator's backward pass, not before it: the
discriminator loss reads detached fakes and the discriminators' own weights, so the result is
the same, and the skip decision can cover both losses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cyclegan.losses import CycleGANModels, LossWeights, discriminator_losses, generator_losses
from cyclegan.scheduler import ReplayBuffer
from cyclegan.seg_encoding import RgbEncoding, SegEncoding


@dataclass
class StepOutcome:
    losses: dict[str, torch.Tensor]
    """Detached loss tensors on the device: ``loss_G``, ``loss_D`` and their parts."""
    skipped: torch.Tensor
    """0-dim float on the device, 1.0 when some process saw a non-finite loss or gradient and no weights moved
    anywhere; the same value on every process. Read it only when a sync is due anyway."""


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Fused optimizers take a device-side ``found_inf`` and skip their update on the device."""
    return bool(optimizer.defaults.get("fused"))


class TrainStep:
    """Callable step over (possibly DDP-wrapped or compiled) models and plain torch optimizers.

    ``autocast`` returns the mixed-precision context (Accelerate's ``accelerator.autocast``, or
    ``contextlib.nullcontext``); ``scaler`` is the fp16 GradScaler, if any; ``distributed`` says
    whether the skip flag must be agreed with other processes; ``encoding`` is how segmentation
    maps reach the networks (``model.seg_mode``: rgb batches carry ``seg``, classes batches ``label``).
    """

    def __init__(
        self,
        models: CycleGANModels,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        buffers: tuple[ReplayBuffer, ReplayBuffer],
        weights: LossWeights,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        scaler: torch.amp.GradScaler | None = None,
        distributed: bool = False,
        channels_last: bool = False,
        encoding: SegEncoding | None = None,
    ) -> None:
        self.models = models
        self.encoding = encoding or RgbEncoding()
        self.optimizers = (opt_g, opt_d)
        self.photo_buffer, self.seg_buffer = buffers
        self.weights = weights
        self.autocast = autocast
        self.scaler = scaler
        self.distributed = distributed
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.disc_params = [*models.disc_real.parameters(), *models.disc_seg.parameters()]
        # Without fused kernels the skip has to be decided on the host: one sync per step.
        self.device_skip = scaler is not None or all(is_fused(o) for o in self.optimizers)

    def _freeze_discriminators(self, frozen: bool) -> None:
        # No weight gradients for D while G learns through it: saves the compute, and DDP
        # then has nothing of D's to all-reduce in the generator step.
        for p in self.disc_params:
            p.requires_grad_(not frozen)

    def _any_process(self, flag: torch.Tensor) -> torch.Tensor:
        """MAX over processes of a 0/1 flag, on the device (no host sync)."""
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def forward_backward(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Both losses and their gradients; returns the detached losses and the agreed skip flag.

        Also what ``cyclegan-bench`` counts FLOPs on, so the count is of this code."""
        batch = {
            "photo": batch["photo"].contiguous(memory_format=self.memory_format),
            "seg": self.encoding.real(batch, self.memory_format),  # classes: one-hot, made here on the device
            "label": batch.get("label"),
        }
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self._freeze_discriminators(True)
        with self.autocast():
            gen = generator_losses(self.models, batch, self.weights, self.encoding)
        self._backward(gen.total)
        self._freeze_discriminators(False)
        bad_g = self._any_process((~torch.isfinite(gen.total.detach())).float())
        # A skipped step stores nothing, and a fake with a non-finite pixel is never stored.
        keep = bad_g == 0
        fake_photo = self.photo_buffer.push_and_pop(gen.fake_photo, keep)
        # classes: the buffer keeps uint8 ids of the hard samples and gives one-hot maps back
        fake_seg = self.encoding.restore(self.seg_buffer.push_and_pop(self.encoding.store(gen.fake_seg), keep))
        with self.autocast():
            disc = discriminator_losses(self.models, batch, fake_photo, fake_seg)
            loss_d = disc["disc_real"] + disc["disc_seg"]
        self._backward(loss_d)
        bad = torch.maximum(bad_g, self._any_process((~torch.isfinite(loss_d.detach())).float()))
        bad = torch.maximum(bad, self._nonfinite_gradients())
        losses = {f"loss_{k}": v.detach() for k, v in {**gen.parts, **disc}.items()}
        losses["loss_G"] = gen.total.detach()
        losses["loss_D"] = loss_d.detach()
        return losses, bad

    def _nonfinite_gradients(self) -> torch.Tensor:
        """1.0 if any gradient holds an inf or NaN (fp16 overflow, a bad batch), checked by the fused
        kernel GradScaler uses. After DDP's all-reduce every process holds the same gradients, so
        the answer agrees without another collective."""
        grads = [p.grad for opt in self.optimizers for g in opt.param_groups for p in g["params"] if p.grad is not None]
        found = torch.zeros((), device=grads[0].device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.ones((), device=found.device))
        return found

    def _apply(self, bad: torch.Tensor) -> None:
        """Both optimizer updates, or neither, as ``bad`` (0.0/1.0 on the device) says."""
        if self.scaler is not None:
            inf = torch.where(bad > 0, float("inf"), 0.0)
            for opt in self.optimizers:
                grad = next(p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None)
                grad[(0,) * grad.ndim].add_(inf)  # the scaler then finds it and skips this optimizer
                self.scaler.step(opt)
            self.scaler.update()  # once per step: a skipped step lowers the scale once
            return
        if not self.device_skip:
            if bad.item():  # the host sync that fused optimizers avoid
                return
            for opt in self.optimizers:
                opt.step()
            return
        for opt in self.optimizers:
            opt.grad_scale, opt.found_inf = None, bad
            try:
                opt.step()
            finally:
                del opt.grad_scale, opt.found_inf

    def __call__(self, batch: dict[str, Any]) -> StepOutcome:
        losses, bad = self.forward_backward(batch)
        self._apply(bad)
        return StepOutcome(losses, skipped=bad)


class StepStats:
    """What the loop keeps about its steps between two syncs, all on the device: loss sums over
    the steps that were not skipped, how many were skipped, and the longest run of consecutive
    skipped steps (the trainer aborts when it reaches ``train.max_nonfinite_steps``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.run = torch.zeros((), device=device)
        self.reset_interval()
        self.reset_check()

    def reset_interval(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counted = torch.zeros((), device=self.device)
        self.skipped = torch.zeros((), device=self.device)
        self.steps = 0

    def reset_check(self) -> None:
        self.longest_run = self.run.clone()

    def add(self, outcome: StepOutcome) -> None:
        bad = outcome.skipped
        for k, v in outcome.losses.items():
            v = torch.where(bad > 0, 0.0, v.float())  # a skipped step's NaN must not reach the sums
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.counted += 1 - bad
        self.skipped += bad
        self.steps += 1
        self.run = (self.run + 1) * bad
        self.longest_run = torch.maximum(self.longest_run, self.run)

    def means(self) -> tuple[dict[str, float], int]:
        """Mean losses of the interval's counted steps, and its skipped count (one host sync)."""
        names = list(self.sums)
        values = torch.stack([self.counted, self.skipped, *(self.sums[k] for k in names)]).tolist()
        counted, skipped, sums = values[0], values[1], values[2:]
        means = {k: s / counted for k, s in zip(names, sums, strict=True)} if counted else {}
        return means, int(skipped)
