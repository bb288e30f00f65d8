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

Unpaired shards (two domains: a photo stream and a map stream of other sizes) split each domain
into rank blocks by the same rule. ``data.epoch_length`` sets the epoch's ``L`` draws per rank:
``max`` from the larger domain's smallest block, ``min`` from the smaller's, each rounded down to
whole batches. :func:`domain_read` then says how a rank reads each domain in an epoch:

* a block of at most ``L`` samples is *cycled*: fresh permutations of the block, one after the
  other, cut at ``L`` (each sample seen ``L // n`` or ``L // n + 1`` times);
* a larger block is cut into ``k = n_min // L`` sub-blocks of at least ``L`` samples each (DALI's rule
  again, ``num_shards = W*k``, ``shard_id = r*k + epoch % k``: they nest inside rank r's block) and
  the epoch draws ``L`` of the sub-block it is on. With ``k = 1`` that is the whole block, where at
  most ``batch_size + W - 1`` samples sit out; with ``k > 1`` a different part reads each epoch, so
  the whole domain comes round every ``k`` epochs, whatever the loader's shuffle buffer.
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


@dataclass(frozen=True)
class Domains:
    """An unpaired split: photos and maps from different sources, each a stream of its own."""

    photos: Split
    maps: Split


@dataclass(frozen=True)
class DomainRead:
    """How one rank reads one domain in one epoch (see the module notes)."""

    window: range
    """The sample numbers the epoch draws from: the rank's block, or one sub-block of it."""
    count: int
    """Samples drawn: the epoch's batches times the batch size."""
    cycled: bool
    """True when ``window`` is smaller than ``count`` and comes round in fresh permutations."""
    whole: bool
    """At most block and batch rounding (``batch_size + W - 1`` samples) of ``window`` sit out. When
    not, which part sits out must be a fair draw from all of ``window`` (DALI's shuffle buffer holds it)."""
    shard_id: int
    num_shards: int
    """``window`` in DALI's terms: shard ``shard_id`` of ``num_shards`` equal cuts of the domain."""


class ShardLoader:
    """What the trainer sees of a loader, and what both loaders share: this rank's block of the
    split (of each domain, when unpaired) and the number of batches every rank runs."""

    name = ""

    def __init__(
        self,
        data: Split | Domains,
        cfg: DataConfig,
        *,
        rank: int,
        world_size: int,
        device: torch.device,
        seed: int,
        train: bool,
        coloured: bool = True,
    ) -> None:
        self.cfg = cfg
        self.rank, self.world_size, self.device = rank, world_size, device
        self.seed, self.train = seed, train
        self.coloured = coloured
        """Whether batches carry ``seg`` (the label in the training palette); classes mode needs ``label`` only."""
        self.unpaired = isinstance(data, Domains)
        self.photos, self.maps = (data.photos, data.maps) if self.unpaired else (data, data)
        """Where photos and maps are read from: the same split when paired."""
        self.paired = not self.unpaired and (cfg.paired or not train)  # evaluation compares a photo with its own label
        sample_size = cfg.sample_size if train else 0
        if not self.unpaired:
            self.block = rank_block(len(data.samples), rank, world_size)
            self.batches_per_epoch = batches_per_epoch(len(data.samples), world_size, cfg.batch_size, sample_size)
            return
        if cfg.paired:
            raise LoaderError(f"{data.photos.tars[0].parent / MANIFEST}: data.paired: true (and optim.lambda_paired) "
                              "needs paired shards; this split's photos and maps come from different "
                              "sources")  # fmt: skip
        sizes = {domain: len(split.samples) for domain, split in zip(DOMAINS, (data.photos, data.maps), strict=True)}
        for domain, size in sizes.items():
            if size < world_size:
                raise LoaderError(f"{data.photos.tars[0].parent / MANIFEST}: the {domain} domain has {size} sample(s), "
                                  f"fewer than the {world_size} processes")  # fmt: skip
        longest = cfg.epoch_length == "max" and train  # evaluation reads each domain once at most
        epoch_n = max(sizes.values()) if longest else min(sizes.values())
        self.batches_per_epoch = batches_per_epoch(epoch_n, world_size, cfg.batch_size, sample_size)

    def domain_reads(self, epoch: int) -> tuple[DomainRead, DomainRead]:
        """Unpaired: how this rank reads the photos and the maps in ``epoch``."""
        count = self.batches_per_epoch * self.cfg.batch_size
        return tuple(
            domain_read(len(split.samples), self.rank, self.world_size, count, epoch, self.cfg.batch_size)
            for split in (self.photos, self.maps)
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


def read_manifest(shards: str | Path) -> dict:
    """``manifest.json`` of a ``cyclegan-shard`` output, of a format this version reads."""
    path = Path(shards) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        version, splits = manifest.get("format"), manifest["splits"]
        dict(splits)
    except FileNotFoundError:
        raise LoaderError(f"{path}: not found; write shards with cyclegan-shard first") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise LoaderError(f"{path}: not a cyclegan-shard manifest ({e})") from None
    if version not in FORMATS:
        raise LoaderError(f"{path}: format {version!r} is not one this version reads ({', '.join(FORMATS)}); "
                          "update cyclegan-ade20k or shard again with this version")  # fmt: skip
    return manifest


def read_data(shards: str | Path, split: str) -> Split | Domains:
    """What a loader reads of one split: its samples, or each domain's when the split is unpaired."""
    root = Path(shards)
    splits = read_manifest(root)["splits"]
    if split not in splits:
        raise LoaderError(f"{root / MANIFEST}: no split '{split}' (has: {', '.join(splits) or 'none'})")
    entry = splits[split]
    if all(domain in entry for domain in DOMAINS):
        photos, maps = (_split(root, split, entry[domain], f"{split}/{domain}", needs)
                        for domain, needs in zip(DOMAINS, ((PHOTO,), (LABEL,)), strict=True))  # fmt: skip
        return Domains(photos, maps)
    return _split(root, split, entry, split, (PHOTO, LABEL))


def read_split(shards: str | Path, split: str) -> Split:
    """A paired split: what evaluation scores, each map the ground truth of its photo."""
    data = read_data(shards, split)
    if isinstance(data, Domains):
        raise LoaderError(f"{Path(shards) / MANIFEST}: split '{split}' is unpaired (its photos and maps come from "
                          "different sources); scoring needs a paired split, such as the validation split")  # fmt: skip
    return data


def split_names(shards: str | Path) -> list[str]:
    """The splits a manifest lists."""
    return list(read_manifest(shards)["splits"])


def _split(root: Path, split: str, entry: dict, what: str, needs: tuple[str, ...]) -> Split:
    """The tars, ``.idx`` files and samples of one stream, checked for the parts training needs."""
    try:
        tars = [root / name for name in entry["shards"]]
    except (KeyError, TypeError) as e:
        raise LoaderError(f"{root / MANIFEST}: split '{split}' is not a cyclegan-shard split entry ({e})") from None
    indexes = [tar.with_suffix(".idx") for tar in tars]
    samples = [sample for tar, idx in zip(tars, indexes, strict=True) for sample in _read_index(tar, idx, needs)]
    if not samples:
        raise LoaderError(f"{root / MANIFEST}: split '{what}' has no samples")
    return Split(tars, indexes, samples)


def _read_index(tar: Path, idx: Path, needs: tuple[str, ...]) -> Iterator[Sample]:
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
        for ext in needs:
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


def domain_read(n: int, rank: int, world_size: int, count: int, epoch: int, batch_size: int) -> DomainRead:
    """How rank ``rank`` reads ``count`` of a domain's ``n`` samples in ``epoch`` (see the module notes):
    depends on these numbers only, so every rank and both loaders agree."""
    if count > n // world_size:
        return DomainRead(rank_block(n, rank, world_size), count, cycled=True, whole=False, shard_id=rank,
                          num_shards=world_size)  # fmt: skip
    parts = max(1, n // (world_size * max(count, 1)))  # each part holds at least count samples
    shard_id, num_shards = rank * parts + epoch % parts, world_size * parts
    window = rank_block(n, shard_id, num_shards)
    whole = parts == 1 and len(window) - count < batch_size + world_size
    return DomainRead(window, count, cycled=False, whole=whole, shard_id=shard_id, num_shards=num_shards)


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
