"""Shared pieces of the trainer tests: tiny shards and the tiny-run command line."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
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


def make_unpaired_data(root: Path, n_photos: int = 13, n_maps: int = 8) -> dict[str, Path]:
    """Photos of one synthetic set and the colour maps of another, renamed and of other sizes (no map
    belongs to a photo), plus paired validation folders."""
    photo_set = make_synthetic_ade20k(root / "a", layout="folders", n_train=n_photos, n_val=3, size=(40, 48), seed=1)
    map_set = make_synthetic_ade20k(root / "b", layout="folders", n_train=n_maps, n_val=0, size=(52, 44), seed=2)
    maps = root / "maps"
    maps.mkdir()
    for number, path in enumerate(sorted((map_set / "segmented").iterdir())):
        path.rename(maps / f"map_{number:02d}.png")
    return {"photos": photo_set / "images", "maps": maps, "val_photos": photo_set / "val_images",
            "val_maps": photo_set / "val_segmented"}  # fmt: skip


def make_unpaired_shards(root: Path, n_photos: int = 13, n_maps: int = 8, validation: bool = True) -> Path:
    """``cyclegan-shard --unpaired`` output of :func:`make_unpaired_data`: 4 samples a shard."""
    data, out = make_unpaired_data(root, n_photos, n_maps), root / "shards"
    args = ["--photos", data["photos"], "--segmentations", data["maps"], "--unpaired", "--out", out,
            "--samples-per-shard", "4", "--workers", "1"]  # fmt: skip
    if validation:
        args += ["--val-photos", data["val_photos"], "--val-segmentations", data["val_maps"]]
    assert shard_main([str(arg) for arg in args]) == 0
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


def fork_ranks(target: str, argv: list[str], world_size: int = 2, timeout: float = 120,
               **env: str) -> subprocess.CompletedProcess:
    """``target`` (``module:function``, as entry points are named) called with ``argv`` on ranks
    0..world_size-1 of a gloo job, each a real process with the
    environment torchrun gives its workers (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT), but forked
    from a fork server that has already imported the trainer, and with no launcher process: a start
    costs a fork, not seconds of imports. For tests about the ranks; tests about launchers (signal
    forwarding, the agent, launch/node.sh) run the real one. The result reads like ``run_group``'s:
    the ranks' output one after the other, and the first non-zero exit code."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["cyclegan.trainer", "cyclegan.data.worker_signals"])  # if it is not up yet
    multiprocessing.forkserver.ensure_running()
    base = subprocess_env(ACCELERATE_USE_CPU="1", WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port(), **env)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ranks-") as logs:
        ranks = [
            context.Process(target=_rank, args=(target, argv, {**base, "RANK": str(r), "LOCAL_RANK": str(r)},
                                                Path(logs) / f"rank{r}"))  # fmt: skip
            for r in range(world_size)
        ]
        for rank in ranks:
            rank.start()
        for rank in ranks:
            rank.join(timeout)
        for rank in ranks:
            if rank.exitcode is None:
                rank.kill()
                rank.join()
        out, err = ("".join((Path(logs) / f"rank{r}.{kind}").read_text() for r in range(world_size))
                    for kind in ("out", "err"))  # fmt: skip
    codes = [-9 if r.exitcode is None else r.exitcode for r in ranks]
    return subprocess.CompletedProcess(target, next((c for c in codes if c), 0), out, err)


def _rank(target: str, argv: list[str], env: dict[str, str], log: Path) -> None:
    """One rank of :func:`fork_ranks`, in the forked process."""
    os.environ.clear()
    os.environ.update(env)
    for fd, kind in ((1, "out"), (2, "err")):
        file = os.open(f"{log}.{kind}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    sys.stdout.reconfigure(line_buffering=True)  # what a rank printed survives its being killed
    sys.stderr.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the fork server's (it ignores SIGTERM)
    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))  # torch read the server's environment
    sys.path.insert(0, str(REPO / "tests"))
    module, _, function = target.partition(":")
    code = getattr(importlib.import_module(module), function)(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


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
    """The history rows of an offline W&B run folder, with media flattened to ``key/field`` (W&B stores
    an image as nested keys in some versions and as one dict value in others)."""
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key, value = item.key or "/".join(item.nested_key), json.loads(item.value_json)
                row.update({f"{key}/{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
            rows.append(row)
    return rows
