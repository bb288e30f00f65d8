"""What the loaders agree on: the shards of a split, which samples each rank reads, and each epoch's order.

Both loaders (DALI and the torchvision fallback) read ``cyclegan-shard`` output through this
module, so they split the data between processes by the same rule and any difference between
them is in decoding, never in which samples they see.

The rule. A split's N samples are numbered in manifest order (shard by shard, index order
inside a shard). Rank r of W owns the contiguous block ``[N*r // W, N*(r+1) // W)`` — the rule
of DALI's ``shard_id``/``num_shards``; blocks are disjoint and cover the split. Shards are
pre-shuffled by the sharder, so a block is a random subset. Every rank runs the same number of
batches per epoch, ``min(N // W, sample_size // W) // batch_size``, or DDP's collectives would
wait for a rank that has finished: up to ``batch_size`` + ``W`` - 1 samples of a rank's block
sit out each epoch, different ones each epoch when shuffling.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cyclegan.config import DataConfig

if TYPE_CHECKING:  # torch is the loaders' business; the sharder reads this module without it
    import torch

MANIFEST = "manifest.json"
PHOTO, LABEL = "jpg", "label.png"
PAIRED_FORMAT = "cyclegan-shard/1"
"""A manifest's ``format`` when every sample is a photo with its own map (one stream per split)."""
UNPAIRED_FORMAT = "cyclegan-shard/2"
"""A manifest's ``format`` when training splits hold two domains: a photo stream and a map stream."""
FORMATS = (PAIRED_FORMAT, UNPAIRED_FORMAT)
DOMAINS = ("photos", "maps")
"""The streams of an unpaired split, as named in its manifest entry and its shard files."""


class LoaderError(ValueError):
    """Shards that cannot be read as asked, phrased as ``<file>: <what is wrong>``."""


class CorruptSampleError(LoaderError):
    """A sample whose bytes do not decode; names its shard and key."""


@dataclass(frozen=True)
class Sample:
    shard: Path
    key: str
    parts: dict[str, tuple[int, int]]
    """Extension -> (byte offset, size) of the member inside the tar."""

    def where(self) -> str:
        return f"{self.shard}: {self.key}"


@dataclass(frozen=True)
class Split:
    tars: list[Path]
    indexes: list[Path]
    samples: list[Sample]


class ShardLoader:
    """What the trainer sees of a loader, and what both loaders share: this rank's block of
    the split and the number of batches every rank runs."""

    name = ""

    def __init__(
        self,
        split: Split,
        cfg: DataConfig,
        *,
        rank: int,
        world_size: int,
        device: torch.device,
        seed: int,
        train: bool,
        coloured: bool = True,
    ) -> None:
        self.split, self.cfg = split, cfg
        self.rank, self.world_size, self.device = rank, world_size, device
        self.seed, self.train = seed, train
        self.coloured = coloured
        """Whether batches carry ``seg`` (the label in the training palette); classes mode needs ``label`` only."""
        self.paired = cfg.paired or not train  # evaluation compares a photo with its own label
        self.block = rank_block(len(split.samples), rank, world_size)
        self.batches_per_epoch = batches_per_epoch(
            len(split.samples), world_size, cfg.batch_size, cfg.sample_size if train else 0
        )

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[dict]:
        """The epoch's batches after the first ``skip_batches`` (resuming mid-epoch)."""
        raise NotImplementedError


def shards_fingerprint(shards: str | Path) -> str | None:
    """A hash of what the manifest says the shards hold (options and per-split files and counts,
    not where the source images were), so a resume can tell moved shards from other ones.
    None when there is no readable manifest (the loader reports that itself)."""
    try:
        manifest = json.loads((Path(shards) / MANIFEST).read_text())
        content = {"options": manifest.get("options"), "splits": manifest["splits"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def read_split(shards: str | Path, split: str) -> Split:
    """The tars, ``.idx`` files and samples of one split, checked for the parts training needs."""
    root = Path(shards)
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        splits = manifest["splits"]
    except FileNotFoundError:
        raise LoaderError(f"{manifest_path}: not found; write shards with cyclegan-shard first") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise LoaderError(f"{manifest_path}: not a cyclegan-shard manifest ({e})") from None
    if split not in splits:
        raise LoaderError(f"{manifest_path}: no split '{split}' (has: {', '.join(splits) or 'none'})")
    tars = [root / name for name in splits[split]["shards"]]
    indexes = [tar.with_suffix(".idx") for tar in tars]
    samples = [sample for tar, idx in zip(tars, indexes, strict=True) for sample in _read_index(tar, idx)]
    if not samples:
        raise LoaderError(f"{manifest_path}: split '{split}' has no samples")
    return Split(tars, indexes, samples)


def _read_index(tar: Path, idx: Path) -> Iterator[Sample]:
    """Parse one ``wds2idx``-format index: per line, ``ext offset size name`` groups."""
    if not tar.is_file():
        raise LoaderError(f"{tar}: listed in the manifest but missing")
    try:
        header, *lines = idx.read_text().splitlines()
    except (FileNotFoundError, ValueError):
        raise LoaderError(f"{idx}: missing or empty; re-run cyclegan-shard on this folder") from None
    for number, line in enumerate(lines, start=2):
        fields = line.split()
        if not fields or len(fields) % 4:
            raise LoaderError(f"{idx}: line {number}: expected groups of 'ext offset size name'")
        parts = {fields[i]: (int(fields[i + 1]), int(fields[i + 2])) for i in range(0, len(fields), 4)}
        sample = Sample(tar, fields[3].split(".", 1)[0], parts)
        for ext in (PHOTO, LABEL):
            if ext not in parts:
                raise LoaderError(f"{sample.where()}: sample has no .{ext}")
        yield sample


def rank_block(n: int, rank: int, world_size: int) -> range:
    """This rank's sample numbers (DALI's sharding rule)."""
    return range(n * rank // world_size, n * (rank + 1) // world_size)


def batches_per_epoch(n: int, world_size: int, batch_size: int, sample_size: int = 0) -> int:
    """Batches every rank runs per epoch: limited by the smallest block (see the module notes)."""
    per_rank = n // world_size
    if sample_size:
        per_rank = min(per_rank, sample_size // world_size)
    return per_rank // batch_size


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A 30-bit seed per (seed, epoch, rank), depending on nothing else; the headroom is for the
    small per-reader offsets the DALI graph adds."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0] >> 2)


def worker_context(module: str) -> multiprocessing.context.BaseContext:
    """Worker processes start from a clean fork server, not by forking the caller: a process that
    runs DALI, gloo or OpenMP threads can leave a forked child waiting on a lock forever. The server
    imports ``module`` (where the workers' code lives) once, so each worker starts in milliseconds,
    and ignores SIGTERM (see :mod:`cyclegan.data.worker_signals`); its workers, started with
    :func:`end_with_owner`, take only their owner's. A signal sent to the whole job reaches only the
    parent. A process has one fork server: the first caller's ``module`` is preloaded, and a later
    caller's workers import what else they need themselves."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")  # Windows
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module, "cyclegan.data.worker_signals"])
    global _exit_hook_registered
    if not _exit_hook_registered:
        # Registered after multiprocessing's own exit hook, so it runs before it (atexit is LIFO).
        atexit.register(_end_workers_at_exit, context)
        _exit_hook_registered = True
    return context


_exit_hook_registered = False


def end_with_owner(owner: int, *_: object) -> None:
    """A worker's initializer (DataLoader's ``worker_init_fn``, ProcessPoolExecutor's ``initializer``):
    the worker ends when the process that owns it (pid ``owner``) asks it to or is gone, and outlives
    every other SIGTERM and SIGINT.

    Clusters and ``timeout`` signal the whole process group; a worker killed by that SIGTERM (or by the
    SIGINT of a Ctrl-C) would turn the trainer's clean stop into "DataLoader worker exited unexpectedly".
    So SIGTERM is blocked here and a thread takes it with ``sigtimedwait``, which names the sender: the
    owner's SIGTERM ends the worker (DataLoader's ``terminate()`` of a worker that did not stop when told,
    as after an epoch left by an error; an executor's of the rest of a pool one of whose workers died),
    anyone else's is dropped. Ignoring SIGTERM outright would leave such workers alive (and an executor's
    shutdown waiting for them) until the owner exits. The same thread checks every second that the owner
    is still there: DataLoader's own watchdog watches the fork server, which lives as long as its workers."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # before SIG_DFL: no moment it could kill
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ignored (the fork server's) would discard it unseen
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while True:
            sent = signal.sigtimedwait({signal.SIGTERM}, 1.0)
            if sent is not None and sent.si_pid == owner:
                os._exit(0)  # the owner ends the worker
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(0)  # the owner is gone (killed, or exited without closing the loader)

    threading.Thread(target=watch, name="cyclegan-owner-watch", daemon=True).start()


def _end_workers_at_exit(context: multiprocessing.context.BaseContext) -> None:
    """At interpreter exit multiprocessing ends daemonic children with SIGTERM and then waits for them.
    A worker from :func:`worker_context` started without :func:`end_with_owner` ignores SIGTERM and would
    be waited for forever: end them all with SIGKILL first. Nothing of theirs needs saving; batches in
    flight are discarded."""
    for child in multiprocessing.active_children():
        if child.daemon and isinstance(child, context.Process):
            child.kill()
            child.join(timeout=5)
