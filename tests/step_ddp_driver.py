"""Two processes (gloo) run the project's TrainStep over DDP-wrapped tiny models; rank 1's first
batch holds a NaN. Each rank records its weights after each step into ``<folder>/rank{N}.pt``;
``train_helpers.fork_ranks`` starts the ranks."""

import gc
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cyclegan.losses import CycleGANModels, LossWeights
from cyclegan.models import Discriminator, Generator
from cyclegan.scheduler import ReplayBuffer
from cyclegan.step import TrainStep


def weights(models: CycleGANModels) -> dict[str, list[torch.Tensor]]:
    return {name: [p.detach().clone() for p in m.parameters()] for name, m in vars(models).items()}


def run(argv: list[str]) -> int:
    """Two steps on this rank (``RANK``/``WORLD_SIZE``/``MASTER_*`` from the environment); the record
    goes into the folder ``argv[0]``."""
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    gens = [Generator(n_residual_blocks=1, ngf=8) for _ in range(2)]
    raw = CycleGANModels(*gens, Discriminator(ndf=8), Discriminator(ndf=8))
    models = CycleGANModels(*(DistributedDataParallel(m) for m in vars(raw).values()))
    kwargs = {"lr": 1e-3, "betas": (0.5, 0.999), "fused": True}
    opt_g = torch.optim.Adam([*raw.real2seg.parameters(), *raw.seg2real.parameters()], **kwargs)
    opt_d = torch.optim.Adam([*raw.disc_real.parameters(), *raw.disc_seg.parameters()], **kwargs)
    step = TrainStep(models, opt_g, opt_d, (ReplayBuffer(4, rank), ReplayBuffer(4, 10 + rank)),
                     LossWeights(), distributed=True)  # fmt: skip
    record = {"initial": weights(raw), "skipped": [], "after": []}
    for number in range(2):
        g = torch.Generator().manual_seed(100 * rank + number)
        batch = {k: torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for k in ("photo", "seg")}
        if rank == 1 and number == 0:
            batch["photo"][0, :, 3, 3] = float("nan")
        outcome = step(batch)
        record["skipped"].append(outcome.skipped.item())
        record["after"].append(weights(raw))
        record.setdefault("buffer_valid", []).append(step.photo_buffer.valid.clone())
    torch.save(record, Path(argv[0]) / f"rank{rank}.pt")
    # DDP's reducers before the group, as the trainer does: a reducer holding the group's last reference
    # destroys it under the GIL, which a gloo thread may be waiting for (a hang seen with torch 2.11).
    del models, step
    gc.collect()
    dist.destroy_process_group()
    return 0
