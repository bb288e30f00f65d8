"""Atomic files: small self-describing network exports, and the full training state.

Two kinds of file, kept apart on purpose (as edm keeps snapshots apart from training
state): ``*_gen_{epoch}.pt`` / ``*_disc_{epoch}.pt`` hold one network's architecture
arguments and weights, load with ``torch.load(weights_only=True)`` and no config, and are
what ``cyclegan-generate`` reads; ``checkpoints/state_{step}.pt`` holds everything a resume
needs. Every write goes to a temporary file that is fsynced and renamed, so a crash or a
``kill -9`` mid-save never leaves a damaged file under a final name.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
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
STATE_PATTERN = re.compile(r"state_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A file that is not what the caller needs, phrased for the user."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
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


def export_network(model: nn.Module, role: str, path: str | Path, epoch: int) -> Path:
    """Write one network as architecture arguments + weights (no pickled code)."""
    kind, domain_in, domain_out = ROLES[role]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_save(
        {
            "format": FORMAT,
            "kind": kind,
            "role": role,
            "input": domain_in,
            "output": domain_out,
            "arch": dict(model.config),
            "epoch": epoch,
            "state_dict": state,
        },
        path,
    )


def load_trusted(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` restricted to tensors and plain containers, errors in one line."""
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
    if isinstance(data, dict) and data.get("format") == FORMAT and "models" in data:
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


def save_state(state: dict[str, Any], directory: str | Path, step: int, keep: int) -> Path:
    """Write ``state_{step}.pt`` atomically, then delete all but the newest ``keep``."""
    directory = Path(directory)
    path = atomic_save({"format": FORMAT, **state}, directory / f"state_{step:09d}.pt")
    for old in list_states(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_states(directory: str | Path) -> list[Path]:
    """Training-state files in ``directory``, oldest first (ordered by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STATE_PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training-state file; the step is read from its content, never its name."""
    path = Path(path)
    data = load_trusted(path, "cpu")
    if not isinstance(data, dict) or data.get("format") != FORMAT or "models" not in data:
        raise CheckpointError(f"{path}: not a training-state checkpoint written by cyclegan-train")
    return data
