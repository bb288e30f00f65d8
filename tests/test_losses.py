import math

import pytest
import torch
from torch import nn

from cyclegan.losses import (
    CycleGANModels,
    LossWeights,
    discriminator_loss,
    discriminator_losses,
    generator_losses,
    lsgan_loss,
)
from cyclegan.models import Discriminator, Generator
from cyclegan.seg_encoding import ClassEncoding


class Constant(nn.Module):
    """A 'network' whose output is a fixed value, so loss values can be worked out by hand."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


class Shift(nn.Module):
    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta


def test_lsgan_values():
    pred = torch.tensor([0.0, 1.0, 2.0])
    assert lsgan_loss(pred, True).item() == pytest.approx((1 + 0 + 1) / 3)
    assert lsgan_loss(pred, False).item() == pytest.approx((0 + 1 + 4) / 3)


def test_discriminator_loss_hand_values():
    # D outputs 0.5 everywhere: real term (0.5-1)^2 = 0.25, fake term 0.25, halved sum = 0.25.
    assert discriminator_loss(Constant(0.5), torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)).item() == pytest.approx(
        0.25
    )


def test_generator_losses_hand_values():
    # G adds 0.1, F subtracts 0.3: cycles are off by -0.2 everywhere; identities by 0.1 and 0.3.
    models = CycleGANModels(Shift(0.1), Shift(-0.3), Constant(0.0), Constant(0.5))
    batch = {"photo": torch.zeros(2, 3, 8, 8), "seg": torch.ones(2, 3, 8, 8)}
    out = generator_losses(models, batch, LossWeights(cycle=10.0, identity=0.5))
    expected = {
        "adv_real2seg": 0.25,  # D_seg says 0.5, target 1
        "adv_seg2real": 1.0,  # D_real says 0, target 1
        "cycle_photo": 2.0,  # |0.1 - 0.3| * 10
        "cycle_seg": 2.0,
        "idt_real2seg": 0.5,  # |0.1| * 10 * 0.5
        "idt_seg2real": 1.5,  # |0.3| * 10 * 0.5
    }
    assert {k: round(v.item(), 5) for k, v in out.parts.items()} == expected
    assert out.total.item() == pytest.approx(sum(expected.values()))
    assert torch.allclose(out.fake_seg, torch.full_like(out.fake_seg, 0.1))


def test_identity_off_drops_terms():
    models = CycleGANModels(Shift(0.1), Shift(-0.3), Constant(0.0), Constant(0.5))
    batch = {"photo": torch.zeros(1, 3, 8, 8), "seg": torch.ones(1, 3, 8, 8)}
    out = generator_losses(models, batch, LossWeights(identity=0.0))
    assert set(out.parts) == {"adv_real2seg", "adv_seg2real", "cycle_photo", "cycle_seg"}


def test_paired_terms_appear_only_when_enabled():
    models = CycleGANModels(Shift(0.1), Shift(-0.3), Constant(0.0), Constant(0.5))
    batch = {"photo": torch.zeros(1, 3, 8, 8), "seg": torch.ones(1, 3, 8, 8)}
    assert not any(k.startswith("paired") for k in generator_losses(models, batch, LossWeights()).parts)
    parts = generator_losses(models, batch, LossWeights(paired=2.0)).parts
    # rgb: G(photo) = 0.1 against the map 1 (L1 0.9), F(seg) = 0.7 against the photo 0 (L1 0.7), both x 2
    assert round(parts["paired_real2seg"].item(), 5) == 1.8 and round(parts["paired_seg2real"].item(), 5) == 1.4


def test_classes_mode_losses_by_hand():
    """G's logits prefer class 5 by 3 everywhere; the seg cycle and paired terms are cross-entropies
    against the label (paired ignores unlabeled pixels), D_seg and F see a one-hot sample."""

    class Logits(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 151, *x.shape[2:])
            out[:, 5] = 3.0
            return out

    class Photo(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.shape[1] == 151 and x.sum(1).eq(1).all()  # F only ever sees one-hot maps
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    label = torch.tensor([[[0, 5], [5, 7]]])
    batch = {"photo": torch.zeros(1, 3, 2, 2), "seg": ClassEncoding().real({"label": label}), "label": label}
    models = CycleGANModels(Logits(), Photo(), Constant(0.0), Constant(0.5))
    out = generator_losses(models, batch, LossWeights(cycle=10.0, cycle_seg=2.0, paired=1.0), ClassEncoding())
    right, wrong = math.log(1 + 150 * math.exp(-3)), math.log(math.exp(3) + 150)  # -log p(5), -log p(other)
    assert out.parts["cycle_seg"].item() == pytest.approx(2.0 * (2 * right + 2 * wrong) / 4)
    assert out.parts["paired_real2seg"].item() == pytest.approx((2 * right + wrong) / 3)  # pixel 0 ignored
    assert out.parts["paired_seg2real"].item() == 0.0 and out.parts["cycle_photo"].item() == 0.0
    assert out.fake_seg.shape == (1, 151, 2, 2) and out.fake_seg.sum(1).eq(1).all()  # the hard sample
    assert "idt_real2seg" not in out.parts


def tiny_models(seed: int = 0) -> CycleGANModels:
    torch.manual_seed(seed)
    return CycleGANModels(
        Generator(n_residual_blocks=1, ngf=8),
        Generator(n_residual_blocks=1, ngf=8),
        Discriminator(ndf=8),
        Discriminator(ndf=8),
    )


def test_discriminator_step_gives_no_gradient_to_generators():
    models = tiny_models()
    batch = {"photo": torch.randn(1, 3, 32, 32), "seg": torch.randn(1, 3, 32, 32)}
    out = generator_losses(models, batch, LossWeights())
    losses = discriminator_losses(models, batch, out.fake_photo, out.fake_seg)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in models.real2seg.parameters())
    assert all(p.grad is not None for p in models.disc_real.parameters())


def test_tiny_generator_pair_learns_the_cycle():
    """A few dozen Adam steps on one fixed 32x32 pair must clearly lower the cycle loss."""
    models = tiny_models()
    g = torch.Generator().manual_seed(1)
    ramp = torch.linspace(-0.8, 0.8, 32)
    photo = (ramp.view(1, 1, 1, 32) * ramp.view(1, 1, 32, 1) + 0.1 * torch.randn(1, 3, 32, 32, generator=g)).clamp(
        -1, 1
    )
    seg = torch.where(ramp.view(1, 1, 32, 1) > 0, 0.6, -0.6).expand(1, 3, 32, 32).clone()
    batch = {"photo": photo, "seg": seg}
    params = list(models.real2seg.parameters()) + list(models.seg2real.parameters())
    opt = torch.optim.Adam(params, lr=2e-3, betas=(0.5, 0.999))
    weights = LossWeights(cycle=10.0, identity=0.0)

    def cycle_loss() -> float:
        with torch.no_grad():
            out = generator_losses(models, batch, weights)
        return (out.parts["cycle_photo"] + out.parts["cycle_seg"]).item()

    before = cycle_loss()
    for _ in range(40):
        opt.zero_grad()
        out = generator_losses(models, batch, weights)
        (out.parts["cycle_photo"] + out.parts["cycle_seg"]).backward()
        opt.step()
    after = cycle_loss()
    assert after < 0.4 * before, (before, after)
