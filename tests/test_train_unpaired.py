"""Training on unpaired shards (two domains of different sizes): under DDP, stopped and resumed, with DALI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import ROLES, fork_ranks, make_unpaired_shards, same_weights, tiny_args

from cyclegan.train import main

pytestmark = pytest.mark.slow


def fork(shards: Path, out: Path, record: Path, *extra: str, world_size: int = 2, **env: str) -> list[dict]:
    """A run of the recording driver (tests/ddp_driver.py) on ``world_size`` forked ranks; each rank's record."""
    proc = fork_ranks("ddp_driver:run", tiny_args(shards, out, "--data.num_workers", "0", *extra),
                      world_size=world_size, CYCLEGAN_TEST_RECORD=str(record), **env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(record / f"rank{r}.pt", weights_only=True) for r in range(world_size)]


@pytest.fixture(scope="module")
def unpaired_ddp_run(unpaired_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Two processes, two epochs of 3 steps: 13 photos read once per epoch (6 per rank), 8 maps cycled."""
    root = tmp_path_factory.mktemp("unpaired_ddp")
    return root / "run", fork(unpaired_shards, root / "run", root / "record")


def test_two_processes_train_on_two_domains(unpaired_ddp_run: tuple[Path, list[dict]]) -> None:
    out, ranks = unpaired_ddp_run
    assert [r["code"] for r in ranks] == [0, 0] and ranks[0]["steps"] == [6]
    for name in ranks[0]["weights"]:
        assert same_weights(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
    for epoch in (0, 1):
        photos = [{k for k in r["seen"] if k.startswith(f"{epoch}:")} for r in ranks]
        assert len(photos[0]) == len(photos[1]) == 6 and not photos[0] & photos[1]
    assert sorted(p.name for p in out.glob("*.pt")) == sorted(f"{r}_{e}.pt" for r in ROLES for e in (1, 2))
    assert (out / "samples" / "epoch_2.png").is_file()
    assert json.loads((out / "status.json").read_text())["status"] == "finished"


def test_sigterm_mid_epoch_then_resume_matches_the_uninterrupted_run(
    unpaired_ddp_run: tuple[Path, list[dict]], unpaired_shards: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Process 1 is signalled at its 5th batch (epoch 2, step 2 of 3); both stop at the next check and
    save; the resumed run ends with the uninterrupted run's weights, bit for bit."""
    out = tmp_path / "run"
    stopped = fork(unpaired_shards, out, tmp_path / "record", "--train.stop_check_every", "1",
                   CYCLEGAN_TEST_SIGNAL="TERM:rank1@5")  # fmt: skip
    assert stopped[0]["steps"] == stopped[1]["steps"] == [5]
    assert json.loads((out / "status.json").read_text())["status"] == "stopped"
    # Another world size cannot take over mid-epoch: the data position does not carry over.
    assert main(tiny_args(unpaired_shards, out, "--resume", "auto", "--data.num_workers", "0")) == 1
    assert "saved mid-epoch by 2 process(es), and this run has 1" in capsys.readouterr().err
    resumed = fork(unpaired_shards, out, tmp_path / "record2", "--resume", "auto")
    assert resumed[0]["steps"] == [6]
    reference = unpaired_ddp_run[1][0]["weights"]
    for name, weights in resumed[0]["weights"].items():
        assert same_weights(weights, reference[name]), name


def test_dali_cpu_run_without_a_validation_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """data.epoch_length min with DALI on the CPU: 8 maps once per epoch (4 steps); no validation split,
    so the sample grid shows training items, and evaluation is refused before anything is written."""
    shards = make_unpaired_shards(tmp_path / "data", validation=False)
    assert "validation" not in json.loads((shards / "manifest.json").read_text())["splits"]
    out = tmp_path / "run"
    refused = tiny_args(shards, tmp_path / "refused", "--train.eval_every", "1")
    assert main(refused) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("cyclegan-train: error: ") and "no split 'validation' to score" in error
    assert "train.eval_every 0" in error
    assert main(tiny_args(shards, out, "--data.loader", "dali", "--data.epoch_length", "min")) == 0
    printed = capsys.readouterr().out
    assert "2 epochs x 4 steps" in printed and "unpaired domains: 13 photos, 8 maps" in printed
    assert (out / "samples" / "epoch_2.png").is_file() and (out / "real2seg_gen_2.pt").is_file()


def test_resume_refuses_another_epoch_length(unpaired_ddp_run: tuple[Path, list[dict]], unpaired_shards: Path,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    source = unpaired_ddp_run[0] / "checkpoints"
    latest = sorted(source.iterdir())[-1]
    (out / "checkpoints" / latest.name).symlink_to(latest, target_is_directory=True)
    assert main(tiny_args(unpaired_shards, out, "--resume", "auto", "--data.epoch_length", "min")) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot resume: data.epoch_length: checkpoint has 'max', this run 'min'" in error
