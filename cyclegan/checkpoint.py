"""Atomic files: small self-describing network exports, and the committed training state.

Two kinds of file, kept apart on purpose (as edm keeps snapshots apart from training
state): ``*_gen_{epoch}.pt`` / ``*_disc_{epoch}.pt`` hold one network's architecture
arguments and weights, load with ``torch.load(weights_only=True)`` and no config, and are
what ``cyclegan-generate`` reads; ``checkpoints/step_{step}/`` holds everything a resume needs:

    shared.pt     the parts every process has alike (weights, optimizers, schedulers, counters),
                  written once, by process 0
    rank{r}.pt    process r's own parts (its replay buffers and RNG), written by process r
    COMMIT.json   written by process 0 after every process reported its file written: the
                  step, world size, file list, config and shards fingerprint. A folder without
                  it (a save cut short) is never resumed from.

Plain per-rank files rather than torch.distributed.checkpoint: the networks are replicated
(DDP), so there is nothing to shard, and the per-rank parts are different objects, not slices
of one tensor that DCP could reshard; plain files keep ``weights_only`` loading, need no
collective to read, and let a resume on another world size pick the files it needs. Every write
goes to a temporary file that is fsynced and renamed, so a crash or a ``kill -9`` mid-save
never leaves a damaged file under a final name. Single-file ``state_{step}.pt`` checkpoints of
earlier versions are still listed and read.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import time
import zipfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cyclegan.models import Discriminator, Generator

FORMAT = "cyclegan-ade20k/1"
# Which network each exported role is, and what its input and output domains are.
ROLES = {
    "real2seg": ("generator", "photo", "seg"),
    "seg2real": ("generator", "seg", "photo"),
    "real": ("discriminator", "photo", None),
    "seg": ("discriminator", "seg", None),
}
LEGACY_PATTERN = re.compile(r"state_(\d+)\.pt$")
STEP_PATTERN = re.compile(r"step_(\d+)$")
EXPORT_PATTERN = re.compile(r"(?:real2seg_gen|seg2real_gen|real_disc|seg_disc)_(\d+)\.pt$")
COMMIT = "COMMIT.json"
SHARED = "shared.pt"
VISIBLE_WAIT_S = 3.0
"""How long process 0 waits to see a file another process reported written (network filesystems)."""


class CheckpointError(ValueError):
    """A file that is not what the caller needs, phrased for the user."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    """JSON to a temporary sibling, fsync, then rename over ``path``: a reader sees the old or the new file."""
    return _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def _atomic_write(path: str | Path, write: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def export_network(
    model: nn.Module, role: str, path: str | Path, epoch: int, seg_mode: str = "rgb", weights: str = "raw"
) -> Path:
    """Write one network as architecture arguments + weights (no pickled code). ``seg_mode`` says
    how its segmentation maps are encoded (rgb colours or classes), so tools need the file alone;
    ``weights`` whether they are the trained weights (raw) or their moving average (ema)."""
    kind, domain_in, domain_out = ROLES[role]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save(
        {
            "format": FORMAT,
            "kind": kind,
            "role": role,
            "input": domain_in,
            "output": domain_out,
            "seg_mode": seg_mode,
            "weights": weights,
            "arch": dict(model.config),
            "epoch": epoch,
            "state_dict": state,
        },
        path,
    )


def prune_exports(out_dir: str | Path, every: int, keep: int) -> list[Path]:
    """Delete the network exports no longer wanted; return them. Kept: the newest epoch's, and
    every ``every``-th epoch's (only the newest ``keep`` of those, unless ``keep`` is 0)."""
    out_dir = Path(out_dir)
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := EXPORT_PATTERN.fullmatch(p.name))]
    if not found:
        return []
    epochs = sorted({epoch for epoch, _ in found})
    milestones = [epoch for epoch in epochs if epoch % every == 0]
    wanted = {epochs[-1], *(milestones[-keep:] if keep else milestones)}
    doomed = [p for epoch, p in found if epoch not in wanted]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def load_trusted(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` restricted to tensors and plain containers, errors in one line."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a file (a training checkpoint's folder?)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: holds pickled objects other than tensors and plain data") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch file ({str(e).splitlines()[0][:160]})") from None


def load_network(
    path: str | Path, kind: str | None = None, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported network; ``kind`` = "generator"/"discriminator" to insist on one.

    Returns the module (eval mode) and the file's metadata (role, input/output domain,
    epoch, architecture).
    """
    path = Path(path)
    data = load_trusted(path, map_location)
    wanted = kind or "network"
    if isinstance(data, dict) and data.get("format") == FORMAT and ("models" in data or "parts" in data):
        raise CheckpointError(f"{path}: is a training-state checkpoint, not an exported {wanted} (use *_gen_N.pt)")
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or data.get("kind") not in ("generator", "discriminator")
    ):
        raise CheckpointError(f"{path}: not a {wanted} file written by cyclegan-train")
    if kind is not None and data["kind"] != kind:
        raise CheckpointError(f"{path}: is a {data['kind']} ({data['role']}), expected a {kind}")
    cls = Generator if data["kind"] == "generator" else Discriminator
    try:
        model = cls(**data["arch"])
        model.load_state_dict(data["state_dict"])
    except (TypeError, RuntimeError) as e:
        reason = str(e).splitlines()[0][:160]
        raise CheckpointError(f"{path}: weights do not match the architecture ({reason})") from None
    meta = {k: v for k, v in data.items() if k != "state_dict"}
    return model.eval(), meta


def gather(obj: Any, world_size: int) -> list[Any]:
    """Collective: every process's ``obj``, in rank order, on every process."""
    if world_size == 1:
        return [obj]
    out = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def agree(error: str | None, world_size: int) -> None:
    """Collective: raise ``CheckpointError`` on every process if any process reports an error.

    Called after each step that can fail on some processes only (a file one process cannot see
    or write), so that no process walks on into a collective the others never reach."""
    errors = gather(error, world_size)
    failed = [(rank, e) for rank, e in enumerate(errors) if e]
    if failed:
        rank, message = failed[0]
        raise CheckpointError(message if world_size == 1 else f"process {rank}: {message}")


def broadcast(obj: Any, world_size: int) -> Any:
    """Process 0's ``obj`` on every process."""
    if world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sees(path: Path, content: str | None = None) -> bool:
    """Whether ``path`` (with ``content``, if given) shows up within ``VISIBLE_WAIT_S``: a file
    another process has just written may take a moment to appear on a network filesystem."""
    deadline = time.monotonic() + VISIBLE_WAIT_S
    while True:
        try:
            if content is None and path.is_file() or content is not None and path.read_text() == content:
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


@dataclass
class Saved:
    """A committed checkpoint, opened: ``meta`` is small (read from COMMIT.json); the parts are
    read on demand. Also wraps a single-file checkpoint of an earlier version."""

    path: Path
    meta: dict[str, Any]
    _legacy: dict[str, Any] | None = None

    @property
    def step(self) -> int:
        return int(self.meta["train"]["global_step"])

    @property
    def world_size(self) -> int:
        return int(self.meta["world_size"])

    def shared(self) -> dict[str, Any]:
        """The parts every process loads alike."""
        if self._legacy is not None:
            old = self._legacy
            names = ("models", "opt_g", "opt_d", "sched_g", "sched_d", "scaler")
            return {**{k: old.get(k) for k in names}, "train": self.meta["train"],
                    "wandb": {"run_id": old.get("wandb_run_id")}}  # fmt: skip
        return self._read(self.path / SHARED)

    def rank(self, rank: int) -> dict[str, Any]:
        """The per-process parts process ``rank`` of the saving run wrote."""
        if self._legacy is not None:
            return self._legacy["ranks"][rank]
        return self._read(self.path / f"rank{rank}.pt")

    def _read(self, path: Path) -> dict[str, Any]:
        data = load_trusted(path, "cpu")
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("step") != self.step:
            raise CheckpointError(f"{path}: not the step-{self.step} part its {COMMIT} lists")
        return data["parts"]


def open_checkpoint(path: str | Path) -> Saved:
    """A committed ``step_N`` folder (or its COMMIT.json), or an earlier version's state file."""
    path = Path(path)
    if path.name == COMMIT:
        path = path.parent
    if path.is_dir():
        if not (path / COMMIT).is_file():
            raise CheckpointError(f"{path}: has no {COMMIT}: a save that did not finish; resume from an earlier one")
        meta, missing = _read_commit(path)
        if missing:
            raise CheckpointError(f"{path}: committed but {', '.join(missing)} missing (is train.out_dir on "
                                  "a filesystem every process sees?)")  # fmt: skip
        return Saved(path, meta)
    old = load_state(path)
    meta = {
        "world_size": old["world_size"],
        "train": {k: old[k] for k in ("epoch", "step_in_epoch", "global_step")},
        "config": old["config"],
        "shards_fingerprint": None,
    }
    return Saved(path, meta, old)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a single-file training state of an earlier version (before per-rank checkpoints)."""
    path = Path(path)
    data = load_trusted(path, "cpu")
    if not isinstance(data, dict) or data.get("format") != FORMAT or "models" not in data:
        raise CheckpointError(f"{path}: not a training-state checkpoint written by cyclegan-train")
    return data


def _read_commit(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """A folder's commit record and the files it lists that are missing."""
    commit = folder / COMMIT
    try:
        meta = json.loads(commit.read_text())
        missing = [name for name in meta["files"] if not (folder / name).is_file()]
        if not (isinstance(meta["train"]["global_step"], int) and isinstance(meta["world_size"], int)):
            raise TypeError("step or world size not a number")
    except OSError as e:
        raise CheckpointError(f"{commit}: cannot read ({e.strerror or e})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{commit}: not a checkpoint commit marker (bad or missing {e})") from None
    return meta, missing


def _complete(folder: Path) -> bool:
    """A commit marker that reads, and every file it lists present."""
    try:
        return not _read_commit(folder)[1]
    except CheckpointError:
        return False


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Resumable checkpoints in ``directory``, oldest first by step: committed ``step_N`` folders
    with every part their commit lists, and earlier versions' ``state_N.pt`` files. Folders without
    a commit marker, or missing a part, are left out."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = {}
    for p in directory.iterdir():
        if (m := LEGACY_PATTERN.fullmatch(p.name)) and p.is_file():
            found.setdefault(int(m.group(1)), p)
        elif (m := STEP_PATTERN.fullmatch(p.name)) and _complete(p):
            found[int(m.group(1))] = p
    return [found[step] for step in sorted(found)]


class CheckpointManager:
    """Saves and loads one mapping of stateful parts (see ``cyclegan.state``), every process
    taking part: each writes its per-rank parts, process 0 the shared ones and then the commit."""

    def __init__(self, directory: str | Path, rank: int, world_size: int, keep: int, per_rank: Collection[str]) -> None:
        self.directory = Path(directory)
        self.rank, self.world_size, self.keep = rank, world_size, keep
        self.per_rank = frozenset(per_rank)

    def save(self, parts: Mapping[str, Any], step: int, meta: dict[str, Any]) -> Path:
        """Collective. ``meta`` (JSON: train counters, config, shards fingerprint) goes into the commit."""
        folder = self.directory / f"step_{step:09d}"
        error = None
        if self.rank == 0 and (folder / COMMIT).exists():  # saved at this step before: uncommit it first
            try:
                (folder / COMMIT).unlink()
            except OSError as e:
                error = f"{folder / COMMIT}: cannot replace ({e.strerror or e})"
        agree(error, self.world_size)
        try:
            mine = {name: part.state_dict() for name, part in parts.items() if name in self.per_rank}
            atomic_save({"format": FORMAT, "step": step, "rank": self.rank, "parts": mine},
                        folder / f"rank{self.rank}.pt")  # fmt: skip
            if self.rank == 0:
                shared = {name: part.state_dict() for name, part in parts.items() if name not in self.per_rank}
                atomic_save({"format": FORMAT, "step": step, "parts": shared}, folder / SHARED)
        except OSError as e:
            error = f"{folder}: cannot write the checkpoint ({e.strerror or e})"
        agree(error, self.world_size)
        if self.rank == 0:
            try:
                self._commit(folder, step, meta)
                self._prune()
            except (OSError, CheckpointError) as e:
                error = str(e) if isinstance(e, CheckpointError) else f"{folder}: cannot commit ({e.strerror or e})"
        agree(error, self.world_size)
        return folder

    def _commit(self, folder: Path, step: int, meta: dict[str, Any]) -> None:
        files = [SHARED, *(f"rank{r}.pt" for r in range(self.world_size))]
        for name in files:
            if not sees(folder / name):
                raise CheckpointError(f"{folder / name}: written by another process but not visible to process 0 "
                                      f"after {VISIBLE_WAIT_S:.0f} s: train.out_dir must be on a filesystem every "
                                      "process sees")  # fmt: skip
        record = {"format": FORMAT, "step": step, "world_size": self.world_size, "files": files,
                  "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta}  # fmt: skip
        atomic_write_json(record, folder / COMMIT)

    def _prune(self) -> None:
        """Keep the newest ``keep`` checkpoints; drop older ones and older incomplete folders."""
        kept = list_checkpoints(self.directory)
        newest = int(STEP_PATTERN.fullmatch(kept[-1].name).group(1)) if kept else 0
        doomed = kept[: -self.keep]
        for p in self.directory.iterdir():
            m = STEP_PATTERN.fullmatch(p.name)
            if m and not _complete(p) and int(m.group(1)) < newest:
                doomed.append(p)
        for p in doomed:
            if p.is_dir():
                (p / COMMIT).unlink(missing_ok=True)  # first, so a half-deleted folder is never resumed from
                for child in p.iterdir():
                    child.unlink()
                p.rmdir()
            else:
                p.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        found = list_checkpoints(self.directory)
        return found[-1] if found else None

    def load(self, saved: Saved, parts: Mapping[str, Any]) -> list[str]:
        """Load the shared parts, and this process's own if the world size is the saved one.

        Returns the per-rank part names left for the caller (a different world size: see
        ``Saved.rank`` to redistribute them)."""
        shared = saved.shared()
        for name, part in parts.items():
            if name not in self.per_rank:
                if name in shared:
                    part.load_state_dict(shared[name])
                elif hasattr(part, "load_absent"):  # a part newer than the checkpoint that can start afresh
                    part.load_absent()
                else:
                    raise CheckpointError(f"{saved.path}: has no '{name}' part")
        left = [name for name in parts if name in self.per_rank]
        if saved.world_size == self.world_size:
            mine = saved.rank(self.rank)
            for name in left:
                parts[name].load_state_dict(mine[name])
            return []
        return left
