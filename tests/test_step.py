"""The training step on random tensors, through a real (single-process, CPU) Accelerator."""

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from cyclegan.losses import CycleGANModels, LossWeights
from cyclegan.models import Discriminator, Generator
from cyclegan.scheduler import ReplayBuffer
from cyclegan.step import TrainStep


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state; each test here picks its own precision."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def make_step(precision: str = "no", compile: bool = False) -> tuple[TrainStep, CycleGANModels]:
    torch.manual_seed(0)
    raw = CycleGANModels(
        Generator(n_residual_blocks=1, ngf=8),
        Generator(n_residual_blocks=1, ngf=8),
        Discriminator(ndf=8),
        Discriminator(ndf=8),
    )
    acc = Accelerator(cpu=True, mixed_precision=precision)
    opt_g = torch.optim.Adam([*raw.real2seg.parameters(), *raw.seg2real.parameters()], lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*raw.disc_real.parameters(), *raw.disc_seg.parameters()], lr=1e-3, betas=(0.5, 0.999))
    *nets, opt_g, opt_d = acc.prepare(*vars(raw).values(), opt_g, opt_d)
    if compile:
        nets = [torch.compile(n) for n in nets]
    step = TrainStep(acc, CycleGANModels(*nets), opt_g, opt_d, (ReplayBuffer(4), ReplayBuffer(4)), LossWeights())
    return step, raw


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "photo": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
        "seg": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
    }


def snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_step_moves_all_four_networks_and_reports_losses():
    step, raw = make_step()
    before = {name: snapshot(m) for name, m in vars(raw).items()}
    out = step(batch())
    assert not out.skipped and not out.stop
    assert {"loss_G", "loss_D", "loss_cycle_photo", "loss_disc_seg", "loss_idt_real2seg"} <= set(out.losses)
    for name, m in vars(raw).items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters(), strict=True)), name
    assert all(p.requires_grad for p in raw.disc_real.parameters())
    assert len(step.photo_buffer) == 2


def test_non_finite_loss_skips_without_touching_weights():
    step, raw = make_step()
    before = {name: snapshot(m) for name, m in vars(raw).items()}
    bad = batch()
    bad["photo"][0, 0, 0, 0] = float("nan")
    out = step(bad)
    assert out.skipped
    for name, m in vars(raw).items():
        assert all(torch.equal(a, b) for a, b in zip(before[name], m.parameters(), strict=True)), name
    assert len(step.photo_buffer) == 0  # no NaN fakes stored
    assert not step(batch()).skipped


def test_stop_request_is_reported():
    step, _ = make_step()
    assert step(batch(), stop_requested=True).stop


def test_bf16_autocast_step():
    step, _ = make_step("bf16")
    out = step(batch())
    assert not out.skipped and torch.isfinite(out.losses["loss_G"])


@pytest.mark.slow
def test_compiled_step():
    step, raw = make_step(compile=True)
    before = snapshot(raw.real2seg)
    out = step(batch())
    assert torch.isfinite(out.losses["loss_D"])
    assert any(not torch.equal(a, b) for a, b in zip(before, raw.real2seg.parameters(), strict=True))
