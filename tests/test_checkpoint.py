import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from cyclegan.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_save,
    export_network,
    list_checkpoints,
    load_network,
    open_checkpoint,
    prune_exports,
)
from cyclegan.models import Discriminator, Generator
from cyclegan.scheduler import ReplayBuffer
from cyclegan.seg_encoding import mode_of_export
from cyclegan.state import PER_RANK, TrainState


def manager(directory, keep=3, rank=0, world_size=1) -> CheckpointManager:
    return CheckpointManager(directory, rank=rank, world_size=world_size, keep=keep, per_rank=PER_RANK)


def parts(step: int) -> dict:
    buffer = ReplayBuffer(4, seed=step)
    buffer.push_and_pop(torch.full((2, 3, 8, 8), float(step)))
    return {"train": TrainState(global_step=step), "photo_buffer": buffer}


def test_export_loads_without_config(tmp_path):
    gen = Generator(n_residual_blocks=1, ngf=8)
    path = export_network(gen, "real2seg", tmp_path / "real2seg_gen_3.pt", epoch=3)
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["arch"] == {"in_channels": 3, "out_channels": 3, "n_residual_blocks": 1, "ngf": 8,
                           "embed_channels": 0, "head": "tanh"}  # fmt: skip
    assert raw["seg_mode"] == "rgb"
    model, meta = load_network(path, kind="generator")
    assert (meta["role"], meta["input"], meta["output"], meta["epoch"]) == ("real2seg", "photo", "seg", 3)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), gen.eval()(x))
    # A file written before classes mode existed: no seg_mode, no embed_channels/head; it loads as rgb.
    del raw["seg_mode"], raw["arch"]["embed_channels"], raw["arch"]["head"]
    torch.save(raw, tmp_path / "old.pt")
    old, old_meta = load_network(tmp_path / "old.pt", kind="generator")
    assert torch.equal(old(x), gen(x)) and mode_of_export(old_meta) == "rgb"


def test_wrong_kind_and_foreign_files_are_refused(tmp_path):
    disc = export_network(Discriminator(ndf=8), "seg", tmp_path / "seg_disc_1.pt", epoch=1)
    with pytest.raises(CheckpointError, match="is a discriminator"):
        load_network(disc, kind="generator")
    folder = manager(tmp_path / "ck").save(parts(5), step=5, meta={"train": {"global_step": 5}})
    with pytest.raises(CheckpointError, match="training-state checkpoint"):
        load_network(folder / "shared.pt", kind="generator")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_network(folder, kind="generator")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_network(junk)
    with pytest.raises(CheckpointError, match="no such file"):
        load_network(tmp_path / "missing.pt")


class Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "cyclegan-ade20k/1", "x": Evil(str(marker))}, f)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_network(path)
    assert not marker.exists()


def test_keep_last_k_and_order_by_step(tmp_path):
    m = manager(tmp_path, keep=3)
    for step in (1, 20, 3, 400):
        m.save(parts(step), step=step, meta={"train": {"global_step": step}})
    assert [open_checkpoint(p).step for p in list_checkpoints(tmp_path)] == [3, 20, 400]
    assert m.latest().name == "step_000000400"


def test_a_save_without_its_commit_is_never_chosen(tmp_path):
    m = manager(tmp_path)
    m.save(parts(1), step=1, meta={"train": {"global_step": 1}})
    second = m.save(parts(2), step=2, meta={"train": {"global_step": 2}})
    (second / "COMMIT.json").unlink()  # as if process 0 died before committing
    assert m.latest().name == "step_000000001"
    with pytest.raises(CheckpointError, match="has no COMMIT.json"):
        open_checkpoint(second)
    # A commit whose listed part is gone is not chosen either, and refused by name if given.
    third = m.save(parts(3), step=3, meta={"train": {"global_step": 3}})
    (third / "rank0.pt").unlink()
    assert m.latest().name == "step_000000001"
    with pytest.raises(CheckpointError, match="rank0.pt missing"):
        open_checkpoint(third)
    # The next save prunes the incomplete ones.
    m.save(parts(4), step=4, meta={"train": {"global_step": 4}})
    assert not second.exists() and not third.exists()


def test_parts_round_trip_and_same_step_resave(tmp_path):
    m = manager(tmp_path)
    m.save(parts(7), step=7, meta={"train": {"global_step": 7}})
    m.save(parts(7), step=7, meta={"train": {"global_step": 7}, "note": "again"})  # uncommits, rewrites, commits
    saved = open_checkpoint(tmp_path / "step_000000007")
    assert saved.meta["note"] == "again" and saved.world_size == 1
    fresh = {"train": TrainState(), "photo_buffer": ReplayBuffer(4)}
    assert m.load(saved, fresh) == []
    assert fresh["train"].global_step == 7
    assert torch.equal(fresh["photo_buffer"].items[:2], torch.full((2, 3, 8, 8), 7.0))


def test_exports_keep_the_newest_and_every_kth(tmp_path):
    for epoch in range(1, 8):
        export_network(Discriminator(ndf=4), "real", tmp_path / f"real_disc_{epoch}.pt", epoch=epoch)
        prune_exports(tmp_path, every=3, keep=0)
    assert sorted(int(p.stem.rsplit("_", 1)[1]) for p in tmp_path.glob("*.pt")) == [3, 6, 7]
    prune_exports(tmp_path, every=3, keep=1)
    assert sorted(int(p.stem.rsplit("_", 1)[1]) for p in tmp_path.glob("*.pt")) == [6, 7]


def test_kill_during_save_keeps_previous_file(tmp_path):
    """SIGKILL a process in the middle of a large save: the old file must still load."""
    target = tmp_path / "state_000000001.pt"
    atomic_save({"format": "cyclegan-ade20k/1", "models": {}, "step": 1}, target)
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from cyclegan import checkpoint
        real_save = torch.save
        def save_then_die(obj, f):
            real_save(obj, f)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # dies after writing, before the rename
        torch.save = save_then_die
        checkpoint.atomic_save({{"format": "cyclegan-ade20k/1", "models": {{}}, "step": 2,
                                "big": torch.zeros(1_000_000)}}, {str(target)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=os.getcwd())
    assert proc.returncode == -9
    assert torch.load(target, weights_only=True)["step"] == 1
    assert list_checkpoints(tmp_path) == [target]
