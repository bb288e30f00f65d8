"""The CycleGAN objective as plain functions of (models, batch).

Naming: G = ``real2seg`` (photo -> segmentation), F = ``seg2real`` (segmentation ->
photo), D_real judges photos, D_seg judges segmentation maps. Nothing here knows about
Accelerate, devices or data loaders, so every term can be unit-tested on hand-made
tensors; the training loop decides which module wrappers (DDP or plain) it passes in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.seg_encoding import RgbEncoding, SegEncoding


@dataclass
class CycleGANModels:
    """The four networks, by role."""

    real2seg: nn.Module
    seg2real: nn.Module
    disc_real: nn.Module
    disc_seg: nn.Module


@dataclass
class LossWeights:
    """``cycle`` weights the photo cycle, ``cycle_seg`` the seg cycle (both lambda_cyc in rgb mode;
    optim.lambda_cycle_seg for the classes mode's cross-entropy); identity is a fraction of
    ``cycle`` (0: off, as in the paper's labels<->photo runs; 0.5 in its photo<->painting runs);
    ``paired`` weights the supervised terms on aligned pairs (0: off, pure CycleGAN)."""

    cycle: float = 10.0
    identity: float = 0.0
    cycle_seg: float = 10.0
    paired: float = 0.0


@dataclass
class GeneratorOutput:
    """What one generator pass yields: the loss to minimise, its named parts, and the
    fakes the discriminator step needs (not detached: the caller detaches)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    fake_seg: torch.Tensor
    """G(photo) as D_seg and F saw it (in classes mode the straight-through sample, not the logits)."""
    fake_photo: torch.Tensor
    rec_photo: torch.Tensor
    rec_seg: torch.Tensor


def lsgan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al.): mean (D(x) - 1)^2 for real, D(x)^2 for fake."""
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction.float(), target.float())


def generator_losses(
    models: CycleGANModels,
    batch: dict[str, torch.Tensor],
    weights: LossWeights,
    encoding: SegEncoding | None = None,
) -> GeneratorOutput:
    """Adversarial + cycle (+ identity, + paired) losses for both generators.

    ``batch["photo"]`` is Bx3xHxW in [-1, 1]; ``batch["seg"]`` is the map as the networks see it
    (``encoding.real``: palette colours, or one-hot class maps with ``batch["label"]`` its ids).
    They need not be paired, except for the paired terms. Gradients flow into the discriminators'
    inputs but callers should freeze (or pass un-synchronised copies of) the discriminators.
    """
    encoding = encoding or RgbEncoding()
    photo, seg = batch["photo"], batch["seg"]
    seg_out = models.real2seg(photo)  # palette colours, or class logits
    fake_seg = encoding.sample(seg_out)
    fake_photo = models.seg2real(seg)
    rec_photo = models.seg2real(fake_seg)
    rec_seg = models.real2seg(fake_photo)
    parts = {
        "adv_real2seg": lsgan_loss(models.disc_seg(fake_seg), True),
        "adv_seg2real": lsgan_loss(models.disc_real(fake_photo), True),
        "cycle_photo": F.l1_loss(rec_photo.float(), photo.float()) * weights.cycle,
        "cycle_seg": encoding.cycle_loss(rec_seg, batch) * weights.cycle_seg,
    }
    if weights.paired > 0:
        # Aligned crops (data.paired): what pix2pix-style supervision adds to the same step, at no extra pass.
        parts["paired_real2seg"] = encoding.paired_loss(seg_out, batch) * weights.paired
        parts["paired_seg2real"] = F.l1_loss(fake_photo.float(), photo.float()) * weights.paired
    if weights.identity > 0:
        # G should leave something already in its output domain unchanged (and F likewise).
        idt_scale = weights.cycle * weights.identity
        parts["idt_real2seg"] = F.l1_loss(models.real2seg(seg).float(), seg.float()) * idt_scale
        parts["idt_seg2real"] = F.l1_loss(models.seg2real(photo).float(), photo.float()) * idt_scale
    total = torch.stack(list(parts.values())).sum()
    return GeneratorOutput(total, parts, fake_seg, fake_photo, rec_photo, rec_seg)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (LSGAN(D(real), real) + LSGAN(D(fake), fake)); halved as in the paper so D
    learns more slowly than G. ``fake`` is detached here so G receives no gradient."""
    return 0.5 * (lsgan_loss(disc(real), True) + lsgan_loss(disc(fake.detach()), False))


def discriminator_losses(
    models: CycleGANModels,
    batch: dict[str, torch.Tensor],
    fake_photo: torch.Tensor,
    fake_seg: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Both discriminator losses; pass replayed fakes (see ``ReplayBuffer``) and the real maps in the
    networks' encoding (``batch["seg"]``, as for ``generator_losses``)."""
    return {
        "disc_real": discriminator_loss(models.disc_real, batch["photo"], fake_photo),
        "disc_seg": discriminator_loss(models.disc_seg, batch["seg"], fake_seg),
    }
