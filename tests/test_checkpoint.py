import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from cyclegan.checkpoint import (
    CheckpointError,
    atomic_save,
    export_network,
    list_states,
    load_network,
    load_state,
    save_state,
)
from cyclegan.models import Discriminator, Generator


def test_export_loads_without_config(tmp_path):
    gen = Generator(n_residual_blocks=1, ngf=8)
    path = export_network(gen, "real2seg", tmp_path / "real2seg_gen_3.pt", epoch=3)
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["arch"] == {"in_channels": 3, "out_channels": 3, "n_residual_blocks": 1, "ngf": 8}
    model, meta = load_network(path, kind="generator")
    assert (meta["role"], meta["input"], meta["output"], meta["epoch"]) == ("real2seg", "photo", "seg", 3)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), gen.eval()(x))


def test_wrong_kind_and_foreign_files_are_refused(tmp_path):
    disc = export_network(Discriminator(ndf=8), "seg", tmp_path / "seg_disc_1.pt", epoch=1)
    with pytest.raises(CheckpointError, match="is a discriminator"):
        load_network(disc, kind="generator")
    state = save_state({"models": {}}, tmp_path / "ck", step=5, keep=2)
    with pytest.raises(CheckpointError, match="training-state checkpoint"):
        load_network(state, kind="generator")
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
    for step in (1, 20, 3, 400):
        save_state({"models": {}, "step": step}, tmp_path, step=step, keep=3)
    states = list_states(tmp_path)
    assert [load_state(p)["step"] for p in states] == [3, 20, 400]


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
    assert load_state(target)["step"] == 1
    assert list_states(tmp_path) == [target]
