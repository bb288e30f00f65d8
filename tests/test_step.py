"""The training step on random tensors, through a real (single-process, CPU) Accelerator."""

import dataclasses

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from cyclegan.build import build_buffers, build_models, build_optimizers, build_step, prepare_models
from cyclegan.config import Config
from cyclegan.data.loader import build_loader
from cyclegan.losses import CycleGANModels, LossWeights
from cyclegan.models import Discriminator, Generator
from cyclegan.scheduler import ReplayBuffer
from cyclegan.seg_encoding import ClassEncoding
from cyclegan.step import TrainStep


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state; each test here picks its own precision."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def make_step(precision: str = "no", compile: bool = False, identity: float = 0.5) -> tuple[TrainStep, CycleGANModels]:
    torch.manual_seed(0)
    raw = CycleGANModels(
        Generator(n_residual_blocks=1, ngf=8),
        Generator(n_residual_blocks=1, ngf=8),
        Discriminator(ndf=8),
        Discriminator(ndf=8),
    )
    acc = Accelerator(cpu=True, mixed_precision=precision)
    kwargs = {"lr": 1e-3, "betas": (0.5, 0.999), "fused": True}
    opt_g = torch.optim.Adam([*raw.real2seg.parameters(), *raw.seg2real.parameters()], **kwargs)
    opt_d = torch.optim.Adam([*raw.disc_real.parameters(), *raw.disc_seg.parameters()], **kwargs)
    nets = acc.prepare(*vars(raw).values())
    if compile:
        nets = [torch.compile(n) for n in nets]
    buffers = (ReplayBuffer(4), ReplayBuffer(4))
    weights = LossWeights(identity=identity)
    step = TrainStep(CycleGANModels(*nets), opt_g, opt_d, buffers, weights, autocast=acc.autocast)
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
    assert out.skipped.item() == 0
    assert {"loss_G", "loss_D", "loss_cycle_photo", "loss_disc_seg", "loss_idt_real2seg"} <= set(out.losses)
    for name, m in vars(raw).items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters(), strict=True)), name
    assert all(p.requires_grad for p in raw.disc_real.parameters())
    assert len(step.photo_buffer) == 2


def test_classes_mode_step_moves_all_four_networks_and_replays_class_ids():
    torch.manual_seed(0)
    raw = CycleGANModels(
        Generator(3, 151, n_residual_blocks=1, ngf=8, head="logits"),
        Generator(151, 3, n_residual_blocks=1, ngf=8, embed_channels=8),
        Discriminator(ndf=8),
        Discriminator(151, ndf=8, embed_channels=8),
    )
    kwargs = {"lr": 1e-3, "betas": (0.5, 0.999), "fused": True}
    opt_g = torch.optim.Adam([*raw.real2seg.parameters(), *raw.seg2real.parameters()], **kwargs)
    opt_d = torch.optim.Adam([*raw.disc_real.parameters(), *raw.disc_seg.parameters()], **kwargs)
    buffers = (ReplayBuffer(4), ReplayBuffer(4))
    weights = LossWeights(identity=0.0, cycle_seg=1.0)
    step = TrainStep(raw, opt_g, opt_d, buffers, weights, encoding=ClassEncoding())
    before = {name: snapshot(m) for name, m in vars(raw).items()}
    g = torch.Generator().manual_seed(0)
    classes_batch = {"photo": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1,
                     "label": torch.randint(0, 151, (2, 32, 32), generator=g)}  # fmt: skip
    for _ in range(3):
        out = step(classes_batch)  # no "seg": the one-hot maps are made from the label
        assert out.skipped.item() == 0
    for name, m in vars(raw).items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], m.parameters(), strict=True)), name
    assert out.losses["loss_cycle_seg"].item() > 0 and "loss_idt_real2seg" not in out.losses
    assert buffers[1].items.dtype == torch.uint8 and buffers[1].items.shape == (4, 32, 32)
    assert buffers[0].items.dtype == torch.float32


def test_non_finite_loss_skips_without_touching_weights():
    step, raw = make_step()
    before = {name: snapshot(m) for name, m in vars(raw).items()}
    bad = batch()
    bad["photo"][0, 0, 0, 0] = float("nan")
    out = step(bad)
    assert out.skipped.item() == 1
    for name, m in vars(raw).items():
        assert all(torch.equal(a, b) for a, b in zip(before[name], m.parameters(), strict=True)), name
    for buffer in (step.photo_buffer, step.seg_buffer):  # nothing of the skipped step was stored
        assert not buffer.valid.any() and torch.equal(buffer.items, torch.zeros_like(buffer.items))
    for opt in step.optimizers:  # the fused kernels' step counters did not advance either
        assert all(state["step"].item() == 0 for state in opt.state.values())
    assert step(batch()).skipped.item() == 0


def test_bf16_autocast_step():
    step, _ = make_step("bf16")
    out = step(batch())
    assert out.skipped.item() == 0 and torch.isfinite(out.losses["loss_G"])


def test_inf_gradient_with_a_finite_loss_skips_both_updates():
    step, raw = make_step()
    before = {name: snapshot(m) for name, m in vars(raw).items()}
    hook = next(raw.disc_seg.parameters()).register_hook(lambda grad: grad * float("inf"))
    out = step(batch())
    hook.remove()
    assert torch.isfinite(out.losses["loss_G"]) and torch.isfinite(out.losses["loss_D"])
    assert out.skipped.item() == 1
    for name, m in vars(raw).items():  # the generators did not move either
        assert all(torch.equal(a, b) for a, b in zip(before[name], m.parameters(), strict=True)), name


def test_fp16_scaler_skips_both_and_lowers_the_scale_once():
    """Accelerate builds no GradScaler on a CPU, so the step gets torch's CPU scaler directly."""
    step, raw = make_step()
    step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**126, growth_interval=1)
    before = {name: snapshot(m) for name, m in vars(raw).items()}
    out = step(batch())  # loss_G * 2^126 overflows float32: inf generator gradients
    assert out.skipped.item() == 1
    for name, m in vars(raw).items():
        assert all(torch.equal(a, b) for a, b in zip(before[name], m.parameters(), strict=True)), name
    assert step.scaler.get_scale() == 2.0**125  # one backoff (x0.5), not one per optimizer
    step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    out = step(batch())
    assert out.skipped.item() == 0
    assert all(not torch.equal(a, b) for a, b in zip(before["real2seg"], raw.real2seg.parameters(), strict=True))
    assert step.scaler.get_scale() == 2.0**11  # one growth step after one good iteration


def test_step_without_fused_kernels_decides_on_the_host():
    step, raw = make_step()
    for opt in step.optimizers:
        opt.defaults["fused"] = False
        for group in opt.param_groups:
            group["fused"] = False
    step.device_skip = False
    bad = batch()
    bad["seg"][1] = float("nan")
    before = snapshot(raw.seg2real)
    assert step(bad).skipped.item() == 1
    assert all(torch.equal(a, b) for a, b in zip(before, raw.seg2real.parameters(), strict=True))


@pytest.mark.slow
def test_compiled_step_does_not_recompile_in_steady_state(train_shards):
    """The trainer's compiled step, built by its own code with bf16 autocast (as on a GPU) and fed by the
    torch loader: once warmed up (both requires_grad states of D, replay buffers filling, then full) it
    compiles nothing more. The networks and batches are those of test_bench's ladder rows (g)-(i), so
    the compiled code comes from inductor's cache when that test ran first."""
    from torch._dynamo.utils import counters

    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, ngf=4, ndf=4, n_residual_blocks=1)
    cfg.data = dataclasses.replace(cfg.data, shards=str(train_shards), loader="torch", load_size=36, crop_size=32,
                                   batch_size=2, num_workers=0)  # fmt: skip
    cfg.optim = dataclasses.replace(cfg.optim, lambda_identity=0.5, replay_size=4)
    cfg.train = dataclasses.replace(cfg.train, precision="bf16", compile=True)
    acc = Accelerator(cpu=True, mixed_precision="bf16")
    raw = build_models(cfg, acc.device)
    step = build_step(acc, prepare_models(acc, raw, cfg), build_optimizers(raw, cfg), build_buffers(cfg), cfg)
    loader = build_loader(cfg.data, split="training", rank=0, world_size=1, device=acc.device, seed=0, train=True)
    batches = (batch for epoch in range(3) for batch in loader.epoch(epoch))
    torch.compiler.reset()  # this test's own graphs, whatever ran before it
    start = counters["stats"]["unique_graphs"]
    before = snapshot(raw.real2seg)
    for _ in range(3):  # warm-up
        out = step(next(batches))
    assert torch.isfinite(out.losses["loss_D"]) and out.skipped.item() == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, raw.real2seg.parameters(), strict=True))
    warm = counters["stats"]["unique_graphs"]
    assert warm > start
    for _ in range(4):
        step(next(batches))
    assert counters["stats"]["unique_graphs"] == warm, "a steady-state step compiled a new graph"


@pytest.mark.slow
def test_nan_on_one_rank_moves_no_weights_on_any_rank(tmp_path):
    """Real processes over gloo: rank 1's NaN reaches rank 0 only as all-reduced gradients."""
    from train_helpers import fork_ranks

    proc = fork_ranks("step_ddp_driver:run", [str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for record in ranks:
        assert record["skipped"] == [1.0, 0.0]
        for name, initial in record["initial"].items():
            assert all(torch.equal(a, b) for a, b in zip(initial, record["after"][0][name], strict=True)), name
            assert any(not torch.equal(a, b) for a, b in zip(initial, record["after"][1][name], strict=True)), name
        assert not record["buffer_valid"][0].any()  # rank 0's finite fakes of the skipped step were not kept
        assert record["buffer_valid"][1].tolist() == [False, False, True, True]
    for name in ranks[0]["after"][1]:
        assert all(torch.equal(a, b) for a, b in zip(ranks[0]["after"][1][name], ranks[1]["after"][1][name],
                                                     strict=True)), name  # fmt: skip
