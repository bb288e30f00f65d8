"""Shared pieces of the trainer tests: tiny shards and the tiny-run command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import torch

from cyclegan.data.shard import main as shard_main
from cyclegan.data.synthetic import make_synthetic_ade20k

REPO = Path(__file__).resolve().parents[1]
ROLES = ("real2seg_gen", "seg2real_gen", "real_disc", "seg_disc")
"""The four per-epoch export files, by name prefix."""


def make_shards(root: Path, n_train: int = 16, n_val: int = 4) -> Path:
    dataset = make_synthetic_ade20k(root / "ade", n_train=n_train, n_val=n_val, size=(40, 48), seed=1)
    out = root / "shards"
    code = shard_main(["--root", str(dataset), "--out", str(out), "--samples-per-shard", "4", "--workers", "1"])
    assert code == 0
    return out


def tiny_args(shards: Path, out_dir: Path, *extra: str) -> list[str]:
    """A run of 2 epochs x (16 samples / batch 2 / processes) steps, seconds on a CPU."""
    return [
        "--model.n_residual_blocks", "1", "--model.ngf", "8", "--model.ndf", "8",
        "--data.shards", str(shards), "--data.load_size", "36", "--data.crop_size", "32",
        "--data.batch_size", "2", "--data.num_workers", "1",
        "--optim.epochs", "2", "--optim.decay_epoch", "1", "--optim.replay_size", "4",
        "--train.out_dir", str(out_dir), "--train.channels_last", "false", "--train.log_every", "2",
        "--train.export_every", "1",
        "--train.num_samples", "2", "--wandb.mode", "disabled",
        *extra,
    ]  # fmt: skip


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WANDB_"))}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


def run_group(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a session of its own: on timeout the launcher's workers die with it,
    instead of living on with the test's ports and pipes."""
    with subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            err += f"\n(killed after {timeout} s)"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def free_port() -> str:
    """A port nothing listens on now, so a rendezvous never meets a leftover of another run."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def accelerate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", *args]


def load_export(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def wandb_records(run_dir: Path) -> list:
    """The protobuf Records of an offline W&B run folder, read from its transaction log (run-*.wandb):
    a 7-byte header, then LevelDB-style records in 32 KiB blocks, each with a 7-byte header of
    crc32, length and type (1 whole, 2 first, 3 middle, 4 last piece)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B", run_dir
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending = data[pos + 7 : pos + 7 + length] if kind in (1, 2) else pending + data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of an offline W&B run folder."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            for record in wandb_records(run_dir) if record.WhichOneof("record_type") == "history"]  # fmt: skip
