"""Training data: ``cyclegan-shard`` tars in, batches ``{photo, seg, label, key, seg_key}`` out.

``photo`` and ``seg`` are B x 3 x H x W floats in [-1, 1] on the training device (``seg`` is
``label`` coloured with the training palette), ``label`` is B x H x W int64 class ids of the
segmentation stream, ``key``/``seg_key`` name the samples of each stream (equal in paired mode).
With ``coloured=False`` (``model.seg_mode: classes``, whose networks read one-hot maps made from
``label``) the colouring is skipped and batches have no ``seg``.
"""

from __future__ import annotations

import torch

from cyclegan.config import DataConfig
from cyclegan.data.catalog import LoaderError, ShardLoader, read_data
from cyclegan.data.dali import DaliLoader, dali_available
from cyclegan.data.fallback import TorchLoader


def choose_loader(choice: str, device: torch.device) -> tuple[str, str]:
    """``data.loader`` (auto|dali|torch) -> the loader to use and why."""
    if choice == "torch":
        return "torch", "data.loader=torch"
    if choice == "auto" and device.type != "cuda":  # decided without importing DALI
        return "torch", f"auto: training on {device.type}, and DALI's GPU decoding needs a CUDA device"
    available, why = dali_available()
    if choice == "dali":
        if not available:
            raise LoaderError(f"data.loader=dali: {why}; install nvidia-dali or use data.loader=torch")
        mode = "GPU decode" if device.type == "cuda" else "CPU mode: no CUDA device"
        return "dali", f"data.loader=dali, {mode}"
    if not available:
        return "torch", f"auto: {why}"
    return "dali", "auto: nvidia-dali is installed and a CUDA device is in use"


def build_loader(
    cfg: DataConfig,
    *,
    split: str,
    rank: int,
    world_size: int,
    device: torch.device | str,
    seed: int,
    train: bool,
    verbose: bool = False,
    coloured: bool = True,
) -> ShardLoader:
    """This rank's loader over one split; ``train=False`` gives centre crops in shard order (of pairs,
    or of each domain when the split is unpaired)."""
    if cfg.load_size < cfg.crop_size:
        raise LoaderError(f"data.load_size={cfg.load_size} is smaller than data.crop_size={cfg.crop_size}")
    device = torch.device(device)
    kind, why = choose_loader(cfg.loader, device)
    if verbose:
        print(f"data: {kind} loader ({why})", flush=True)
    loader = DaliLoader if kind == "dali" else TorchLoader
    return loader(
        read_data(cfg.shards, split),
        cfg,
        rank=rank,
        world_size=world_size,
        device=device,
        seed=seed,
        train=train,
        coloured=coloured,
    )
