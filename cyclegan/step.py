"""One CycleGAN optimisation step: generators, then discriminators on replayed fakes.

Kept apart from the training loop so ``cyclegan-bench train`` times exactly the step the
trainer runs. ``accelerator`` is duck-typed (``backward``, ``autocast``, ``reduce``,
``num_processes``, ``device``): this module does not import Accelerate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cyclegan.losses import CycleGANModels, LossWeights, discriminator_losses, generator_losses
from cyclegan.scheduler import ReplayBuffer


@dataclass
class StepOutcome:
    losses: dict[str, torch.Tensor]
    """Detached loss tensors on the device (no host sync): ``loss_G``, ``loss_D`` and parts."""
    skipped: bool
    """True when some process saw a non-finite generator loss; then no weights moved anywhere."""
    stop: bool
    """True when some process was asked to stop (preemption signal)."""


class TrainStep:
    """Callable step over prepared (DDP/compiled) models and optimizers."""

    def __init__(
        self,
        accelerator: Any,
        models: CycleGANModels,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        buffers: tuple[ReplayBuffer, ReplayBuffer],
        weights: LossWeights,
        channels_last: bool = False,
    ) -> None:
        self.accelerator = accelerator
        self.models = models
        self.opt_g, self.opt_d = opt_g, opt_d
        self.photo_buffer, self.seg_buffer = buffers
        self.weights = weights
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.disc_params = [*models.disc_real.parameters(), *models.disc_seg.parameters()]

    def _freeze_discriminators(self, frozen: bool) -> None:
        # No weight gradients for D while G learns through it: saves the compute, and DDP
        # then has nothing of D's to all-reduce in the generator step.
        for p in self.disc_params:
            p.requires_grad_(not frozen)

    def _agree(self, nonfinite: torch.Tensor, stop: bool) -> tuple[bool, bool]:
        """Every process must skip or stop together, or DDP's all-reduces deadlock.

        This is the step's one host sync: a two-number all-reduce."""
        flags = torch.stack([nonfinite.float(), torch.tensor(float(stop), device=nonfinite.device)])
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags, reduction="sum")
        bad, stop_all = (flags > 0).tolist()
        return bad, stop_all

    def __call__(self, batch: dict[str, Any], stop_requested: bool = False) -> StepOutcome:
        acc = self.accelerator
        batch = {
            "photo": batch["photo"].contiguous(memory_format=self.memory_format),
            "seg": batch["seg"].contiguous(memory_format=self.memory_format),
        }
        self._freeze_discriminators(True)
        self.opt_g.zero_grad(set_to_none=True)
        with acc.autocast():
            gen = generator_losses(self.models, batch, self.weights)
        bad, stop = self._agree(~torch.isfinite(gen.total.detach()), stop_requested)
        losses = {f"loss_{k}": v.detach() for k, v in gen.parts.items()}
        losses["loss_G"] = gen.total.detach()
        if bad:
            self._freeze_discriminators(False)
            return StepOutcome(losses, skipped=True, stop=stop)
        acc.backward(gen.total)
        self.opt_g.step()

        self._freeze_discriminators(False)
        self.opt_d.zero_grad(set_to_none=True)
        fake_photo = self.photo_buffer.push_and_pop(gen.fake_photo)
        fake_seg = self.seg_buffer.push_and_pop(gen.fake_seg)
        with acc.autocast():
            disc = discriminator_losses(self.models, batch, fake_photo, fake_seg)
            loss_d = disc["disc_real"] + disc["disc_seg"]
        acc.backward(loss_d)
        self.opt_d.step()
        losses.update({f"loss_{k}": v.detach() for k, v in disc.items()})
        losses["loss_D"] = loss_d.detach()
        return StepOutcome(losses, skipped=False, stop=stop)
