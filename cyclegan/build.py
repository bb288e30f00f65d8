"""Models, optimizers, LR schedulers, replay buffers and the training step from a config: what
``cyclegan-train`` and ``cyclegan-bench`` both build, so the benchmark times exactly what the
trainer runs (and nothing imports the trainer)."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from cyclegan.config import Config
from cyclegan.losses import CycleGANModels, LossWeights
from cyclegan.models import Discriminator, Generator
from cyclegan.scheduler import ReplayBuffer, linear_decay
from cyclegan.seg_encoding import NUM_IDS, SegEncoding, encoding_for
from cyclegan.step import TrainStep


def build_models(cfg: Config, device: torch.device | str = "cpu") -> CycleGANModels:
    """The four networks on ``device``, in the configured memory layout. In classes mode G ends in
    a 3x3 conv to 151 logits and F and D_seg start with a 1x1 embedding of the one-hot map.

    The initial weights are a function of ``cfg.seed`` alone, the same in every process; they are
    drawn from a forked CPU generator, so the caller's random state is left as it was."""
    m = cfg.model
    blocks = {"n_residual_blocks": m.n_residual_blocks, "ngf": m.ngf}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if m.seg_mode == "classes":
            models = CycleGANModels(
                real2seg=Generator(3, NUM_IDS, head="logits", **blocks),
                seg2real=Generator(NUM_IDS, 3, embed_channels=m.seg_embed, **blocks),
                disc_real=Discriminator(ndf=m.ndf),
                disc_seg=Discriminator(NUM_IDS, ndf=m.ndf, embed_channels=m.seg_embed),
            )
        else:
            models = CycleGANModels(
                real2seg=Generator(**blocks),
                seg2real=Generator(**blocks),
                disc_real=Discriminator(ndf=m.ndf),
                disc_seg=Discriminator(ndf=m.ndf),
            )
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    for model in vars(models).values():
        model.to(device, memory_format=memory_format)
    return models


def scaled_lr(cfg: Config, world_size: int) -> float:
    """``optim.lr`` moved from ``optim.lr_reference_batch`` to this run's global batch by ``optim.lr_scaling``."""
    o = cfg.optim
    power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[o.lr_scaling]
    return o.lr * (cfg.data.batch_size * world_size / o.lr_reference_batch) ** power


def build_optimizers(
    models: CycleGANModels, cfg: Config, fused: bool = True, world_size: int = 1
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """One Adam over both generators and one over both discriminators (as in the paper).

    Fused (one kernel for all parameters, on CPU and GPU alike) unless the benchmark asks for
    torch's default: the fused kernels also skip a non-finite step on the device."""
    o = cfg.optim
    kwargs: dict[str, Any] = {"lr": scaled_lr(cfg, world_size), "betas": (o.beta1, o.beta2), "fused": fused}
    opt_g = torch.optim.Adam(itertools.chain(models.real2seg.parameters(), models.seg2real.parameters()), **kwargs)
    opt_d = torch.optim.Adam(itertools.chain(models.disc_real.parameters(), models.disc_seg.parameters()), **kwargs)
    return opt_g, opt_d


def build_schedulers(
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer], cfg: Config
) -> tuple[torch.optim.lr_scheduler.LambdaLR, torch.optim.lr_scheduler.LambdaLR]:
    """The paper's constant-then-linear-decay rule, stepped once per epoch. Plain schedulers, never
    prepared by Accelerate (which would step them once per process)."""
    rule = linear_decay(cfg.optim.epochs, cfg.optim.decay_epoch)
    return tuple(torch.optim.lr_scheduler.LambdaLR(opt, rule) for opt in optimizers)  # type: ignore[return-value]


def build_buffers(cfg: Config, rank: int = 0) -> tuple[ReplayBuffer, ReplayBuffer]:
    """Both discriminators' replay buffers; each process's draw from a random stream of its own."""
    base = cfg.seed * 100_003 + 2 * rank
    return ReplayBuffer(cfg.optim.replay_size, base), ReplayBuffer(cfg.optim.replay_size, base + 1)


def prepare_models(accelerator: Any, raw: CycleGANModels, cfg: Config) -> CycleGANModels:
    """Accelerate's wrapping (DDP, autocast), then ``torch.compile`` if asked. The optimizers stay
    plain: the step drives them itself (one GradScaler update per step, device-side skips)."""
    nets = accelerator.prepare(*vars(raw).values())
    if cfg.train.compile:
        mode = None if cfg.train.compile_mode == "default" else cfg.train.compile_mode
        nets = [torch.compile(n, mode=mode) for n in nets]
    return CycleGANModels(*nets)


def build_step(
    accelerator: Any,
    models: CycleGANModels,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    buffers: tuple[ReplayBuffer, ReplayBuffer],
    cfg: Config,
) -> TrainStep:
    """The step over prepared models, with the accelerator's autocast and fp16 scaler."""
    return TrainStep(
        models,
        *optimizers,
        buffers,
        loss_weights(cfg),
        autocast=accelerator.autocast,
        scaler=getattr(accelerator, "scaler", None),
        distributed=accelerator.num_processes > 1,
        channels_last=cfg.train.channels_last,
        encoding=seg_encoding(cfg),
    )


def loss_weights(cfg: Config) -> LossWeights:
    """The objective's weights; the seg cycle's is lambda_cycle in rgb mode (the paper's), and
    lambda_cycle_seg for the classes mode's cross-entropy, which lives on another scale."""
    o = cfg.optim
    cycle_seg = o.lambda_cycle_seg if cfg.model.seg_mode == "classes" else o.lambda_cycle
    return LossWeights(o.lambda_cycle, o.lambda_identity, cycle_seg, o.lambda_paired)


def seg_encoding(cfg: Config) -> SegEncoding:
    """How segmentation maps reach the networks in this run (``model.seg_mode``)."""
    return encoding_for(cfg.model.seg_mode, cfg.model.gumbel_temperature, cfg.model.gumbel_noise)
