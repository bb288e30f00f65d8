"""The trainer end to end on tiny shards: DDP, multi-node launch, resume, preemption, W&B."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import (
    REPO,
    ROLES,
    fork_ranks,
    load_export,
    same_weights,
    tiny_args,
    wandb_history,
    wandb_records,
)

from cyclegan import checkpoint
from cyclegan.build import build_models
from cyclegan.config import load_config
from cyclegan.data.loader import build_loader
from cyclegan.evaluate import evaluate_segmentation
from cyclegan.palette import CLASS_NAMES
from cyclegan.seg_encoding import ClassEncoding
from cyclegan.train import main

pytestmark = pytest.mark.slow


def latest(out_dir: Path) -> checkpoint.Saved:
    return checkpoint.open_checkpoint(checkpoint.list_checkpoints(out_dir / "checkpoints")[-1])


@pytest.fixture(scope="module")
def shards(train_shards: Path) -> Path:
    return train_shards


def test_single_process_outputs(reference_run: Path):
    for epoch in (1, 2):
        for role in ROLES:
            model, meta = checkpoint.load_network(reference_run / f"{role}_{epoch}.pt")
            assert meta["epoch"] == epoch
            assert meta["weights"] == ("ema" if role.endswith("_gen") else "raw")  # train.ema_decay 0.999
        assert (reference_run / "samples" / f"epoch_{epoch}.png").stat().st_size > 0
    final = latest(reference_run)
    assert final.meta["train"] == {"epoch": 2, "step_in_epoch": 0, "global_step": 16}
    assert final.meta["config"]["model"]["ngf"] == 8 and final.world_size == 1
    assert sorted(p.name for p in final.path.iterdir()) == ["COMMIT.json", "rank0.pt", "shared.pt"]
    assert (reference_run / "config.yaml").is_file()
    # The LR rule: decay starts after epoch index 1 (the second and last epoch, still at the
    # base LR), so the scheduler has stepped to 0 for the (non-existent) third epoch.
    assert final.shared()["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.0)
    # Metrics every train.log_every=2 steps, also without W&B.
    logged = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == list(range(2, 17, 2))
    for m in logged:
        assert {"train/loss_G", "train/loss_D", "train/loss_cycle_photo", "train/lr", "perf/pairs_per_s"} <= m.keys()
        assert 0 <= m["perf/data_wait_frac"] <= 1
    assert [m["train/lr"] for m in logged] == [2e-4] * 8


def test_resume_from_epoch_checkpoint_is_bit_identical(reference_run: Path, shards: Path, tmp_path: Path):
    epoch1 = next(
        p
        for p in checkpoint.list_checkpoints(reference_run / "checkpoints")
        if checkpoint.open_checkpoint(p).meta["train"]["epoch"] == 1
    )
    assert main(tiny_args(shards, tmp_path, "--resume", str(epoch1))) == 0
    for role in ROLES:
        assert same_weights(load_export(tmp_path / f"{role}_2.pt"), load_export(reference_run / f"{role}_2.pt")), role
    ema, reference_ema = latest(tmp_path).shared()["ema"], latest(reference_run).shared()["ema"]
    assert all(same_weights(ema[name], reference_ema[name]) for name in ("real2seg", "seg2real"))
    # Epoch 1 was not trained again; its exports, missing here, were written from the checkpoint.
    assert not (tmp_path / "samples" / "epoch_1.png").exists()
    for role in ROLES:
        assert same_weights(load_export(tmp_path / f"{role}_1.pt"), load_export(reference_run / f"{role}_1.pt")), role


FIXTURES = REPO / "tests" / "fixtures"
FIXTURE_ARGS = ("--model.ngf", "4", "--model.ndf", "4", "--optim.replay_size", "3", "--train.num_samples", "0")
"""Both fixtures are single-file training states written after 5 steps of ``tiny_args(...) + FIXTURE_ARGS``
on these shards: v1 by the code of 2026-11-29 (commit a42e7f7: torch.Generator replay states, a non-fused
Adam, lambda_identity 0.5 by default then), v2 by that of 2026-12-02 (commit 9bb00e6, the last before
per-rank checkpoints)."""


@pytest.mark.parametrize(("fixture", "extra"), [("state_v1_step5.pt", ("--optim.lambda_identity", "0.5")),
                                                ("state_v2_step5.pt", ())])  # fmt: skip
def test_checkpoint_of_an_earlier_format_resumes(
    fixture: str, extra: tuple[str, ...], shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(FIXTURES / fixture, tmp_path / "checkpoints" / "state_000000005.pt")
    assert main(tiny_args(shards, tmp_path, *FIXTURE_ARGS, *extra, "--resume", "auto")) == 0
    assert "resumed from" in capsys.readouterr().out
    final = latest(tmp_path)
    assert (final.meta["train"]["epoch"], final.step) == (2, 16)
    assert [checkpoint.load_network(tmp_path / f"real2seg_gen_{e}.pt")[1]["epoch"] for e in (1, 2)] == [1, 2]
    assert all(group["fused"] for group in final.shared()["opt_g"]["param_groups"])  # continues on the fused kernels


def test_resume_refuses_a_changed_objective_in_one_line(shards: Path, tmp_path: Path, capsys):
    """The v1 fixture was trained with lambda_identity 0.5 (the default then); today's default is 0."""
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(FIXTURES / "state_v1_step5.pt", tmp_path / "checkpoints" / "state_000000005.pt")
    assert main(tiny_args(shards, tmp_path, *FIXTURE_ARGS, "--resume", "auto")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.lambda_identity: checkpoint has 0.5, this run 0.0" in err[0]
    assert not (tmp_path / "config.yaml").exists()  # refused before anything was written
    # Forced, it runs, and says what it overrode.
    assert main(tiny_args(shards, tmp_path, *FIXTURE_ARGS, "--resume", "auto", "--train.force_resume", "true")) == 0
    assert "resume forced despite optim.lambda_identity" in capsys.readouterr().out


@pytest.mark.parametrize("seg_mode", ["rgb", "classes"])
def test_two_processes_ddp_dali(shards: Path, tmp_path: Path, seg_mode: str):
    """The DALI loader under DDP (the torch loader's run is test_resilience's ``ddp_run``), in both
    segmentation modes (classes: DALI skips the colouring, the step makes one-hot maps)."""
    out, record = tmp_path / "run", tmp_path / "record"
    proc = fork_ranks("ddp_driver:run", tiny_args(shards, out, "--data.loader", "dali", "--model.seg_mode", seg_mode),
                      CYCLEGAN_TEST_RECORD=str(record))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(record / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name in ranks[0]["weights"]:
        assert same_weights(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
    for epoch in (0, 1):
        keys = [{k for k in r["seen"] if k.startswith(f"{epoch}:")} for r in ranks]
        assert keys[0] and keys[1] and not keys[0] & keys[1]
        assert len(keys[0]) == len(keys[1]) == 8  # 16 samples, 2 processes, batch 2: nothing left over
    assert ranks[1]["exports"] == [] and len(ranks[0]["exports"]) == 8
    assert sorted(p.name for p in out.glob("*.pt")) == sorted(f"{r}_{e}.pt" for r in ROLES for e in (1, 2))
    assert latest(out).world_size == 2
    assert checkpoint.load_network(out / "real2seg_gen_2.pt")[1]["seg_mode"] == seg_mode
    stored = [latest(out).rank(r)["seg_buffer"]["items"] for r in (0, 1)]
    assert all(s.dtype == (torch.uint8 if seg_mode == "classes" else torch.float32) for s in stored)


def test_a_tiny_classes_run_learns(shards: Path, tmp_path: Path):
    """Unpaired CycleGAN in classes mode, 6 epochs of 8 steps: G's validation mIoU rises clearly above
    that of the same network as initialised (the run's own seed), scored on the same centre crops."""
    args = tiny_args(shards, tmp_path, "--model.seg_mode", "classes", "--optim.lr", "1e-3",
                     "--optim.epochs", "6", "--optim.decay_epoch", "3", "--train.num_samples", "0")  # fmt: skip
    assert main(args) == 0
    cfg = load_config(None, args)
    untrained = build_models(cfg).real2seg
    trained, meta = checkpoint.load_network(tmp_path / "real2seg_gen_6.pt")
    assert meta["seg_mode"] == "classes" and meta["arch"]["head"] == "logits"
    val = build_loader(cfg.data, split=cfg.data.val_split, rank=0, world_size=1, device="cpu", seed=0, train=False,
                       coloured=False)  # fmt: skip
    before, after = (evaluate_segmentation(g, val.epoch(0), "cpu", ClassEncoding()) for g in (untrained, trained))
    print(f"mIoU {before['mean_iou']:.3f} -> {after['mean_iou']:.3f}, pixel acc "
          f"{before['pixel_acc']:.3f} -> {after['pixel_acc']:.3f}")  # fmt: skip
    # measured on a 2-core EPYC: mIoU 0.009 -> 0.127, pixel accuracy 0.014 -> 0.465
    assert after["mean_iou"] > before["mean_iou"] + 0.05 and after["pixel_acc"] > before["pixel_acc"] + 0.2


def test_wandb_offline_resume_continues_the_run_and_keeps_replayed_rows(shards: Path, tmp_path: Path):
    """A run logs steps 2-6, checkpoints at 4 and is lost before saving at 6; the resume replays 6 from
    the step-4 checkpoint. With the trainer's own step metric W&B keeps every row (with ``step=`` it
    would drop rows at or below its last step)."""
    pytest.importorskip("wandb")
    first = tiny_args(shards, tmp_path, "--wandb.mode", "offline", "--train.checkpoint_every_steps", "4",
                      "--train.max_steps", "6", "--data.num_workers", "0")  # fmt: skip
    # Each run a process of its own (W&B's state is per process), forked: no second of imports each.
    proc = fork_ranks("cyclegan.train:main", first, world_size=1, WANDB_SILENT="true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shutil.rmtree(tmp_path / "checkpoints" / "step_000000006")  # preempted before this save
    more = tiny_args(shards, tmp_path, "--wandb.mode", "offline", "--resume", "auto", "--data.num_workers", "0",
                     "--wandb.log_artifacts", "true", "--train.eval_every", "1")  # fmt: skip
    proc = fork_ranks("cyclegan.train:main", more, world_size=1, WANDB_SILENT="true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resume changes train.max_steps: 6 -> 0" in proc.stdout
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({run.name.rsplit("-", 1)[-1] for run in runs}) == 1  # one W&B run, continued
    rows = [[row for row in wandb_history(run) if "train/loss_G" in row] for run in runs]
    assert [row["trainer/step"] for row in rows[0]] == [2, 4, 6]
    assert [row["trainer/step"] for row in rows[1]] == [6, 8, 10, 12, 14, 16]
    samples = [row["trainer/step"] for row in wandb_history(runs[1]) if "samples/grid/_type" in row]
    assert samples == [8, 16]  # one grid per epoch end
    assert len(list(runs[1].glob("files/media/images/samples/grid_*.png"))) == 2
    # wandb.log_artifacts: each epoch's generators as a version of one model artifact.
    artifacts = [r.artifact for r in wandb_records(runs[1]) if r.WhichOneof("record_type") == "artifact"]
    artifacts = [a for a in artifacts if a.type == "model"]  # (W&B stores tables as artifacts too)
    assert [sorted(a.aliases) for a in artifacts] == [["epoch-1", "latest"], ["epoch-2", "latest"]]
    assert len({a.name for a in artifacts}) == 1 and artifacts[0].name.startswith("generators-")
    for epoch, artifact in enumerate(artifacts, start=1):
        assert sorted(entry.path for entry in artifact.manifest.contents) == [
            f"real2seg_gen_{epoch}.pt", f"seg2real_gen_{epoch}.pt"]
    # train.eval_every 1: a table of per-class IoU with class names at each evaluation.
    tables = sorted(runs[1].glob("files/media/table/eval/per_class_*.table.json"))
    assert len(tables) == 2
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["id", "class", "iou", "accuracy", "pixels"]
    assert all(CLASS_NAMES[row[0] - 1] == row[1] and row[4] > 0 for row in table["data"]) and table["data"]


def test_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--data.batch_size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cyclegan-train: error: data.batch_size: must be >= 1, got 0"


def test_corrupt_shard_is_one_line(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    copy = shutil.copytree(shards, tmp_path / "shards")
    tar = copy / "training-000001.tar"
    tar.write_bytes(tar.read_bytes()[:1000] + b"\0" * (tar.stat().st_size - 1000))
    assert main(tiny_args(copy, tmp_path / "run")) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the closed progress bar
    assert last.startswith("cyclegan-train: error: ") and "training-000001.tar: " in last
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "failed" and status["reason"] == last.removeprefix("cyclegan-train: error: ")
