"""cyclegan-bench: the report's shape and arithmetic (speed itself is never asserted)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cyclegan.bench.__main__ import main
from cyclegan.bench.train import StepSetup, count_flops, make_step, peak_tflops, synthetic_batch
from cyclegan.config import Config
from cyclegan.data.shard import main as shard_main
from cyclegan.models import Discriminator, Generator


@pytest.fixture(scope="module")
def shards(scene_parsing_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench_shards")
    assert shard_main(["--root", str(scene_parsing_dataset), "--out", str(out), "--workers", "1"]) == 0
    return out


def test_loader_report(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "loader.json"
    args = ["loader", "--shards", str(shards), "--batch", "2", "--workers", "1", "--load-size", "36",
            "--crop-size", "32", "--batches", "6", "--warmup", "1", "--json", str(report_path)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    assert report["benchmark"] == "loader" and report["machine"]["torch"]
    rows = {row["loader"]: row for row in report["rows"]}
    assert set(rows) == {"dali", "torch", "seed-style"}
    for row in rows.values():
        assert row["batches"] == 6 and row["pairs_per_s"] > 0
        assert row["ms_per_batch_p10"] <= row["ms_per_batch_median"] <= row["ms_per_batch_p90"]
        assert row["vs_seed_style"] == pytest.approx(row["pairs_per_s"] / rows["seed-style"]["pairs_per_s"])
    table = capsys.readouterr().out
    assert "x seed-style" in table and "seed-style" in table


def test_loader_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["loader", "--loaders", "dali,pillow"])
    assert exit_.value.code == 2
    assert "unknown loader(s) pillow" in capsys.readouterr().err


def test_loader_too_few_samples_is_one_line(shards: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loader", "--shards", str(shards), "--loaders", "torch", "--batch", "64", "--load-size", "36",
                 "--crop-size", "32"]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("cyclegan-bench: error: ") and "\n" not in err


TINY = ["--ngf", "4", "--ndf", "4", "--blocks", "1", "--size", "32", "--workers", "1"]


@pytest.mark.slow
def test_train_ladder(shards: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "ladder.json"
    args = ["train", "--ladder", *TINY, "--batch", "2", "--precision", "bf16", "--steps", "2", "--warmup", "1",
            "--shards", str(shards), "--loader", "torch", "--peak-tflops", "0.5",
            "--json", str(report_path)]  # fmt: skip
    assert main(args) == 0
    rows = json.loads(report_path.read_text())["rows"]
    assert [row["name"] for row in rows] == list("abcdefghi")  # (i): + EMA, the trainer's default 0.999
    first = rows[0]
    assert (first["batch"], first["precision"], first["compile"], first["data"], first["fused"]) == (
        1, "fp32", False, "seed-style", False)  # fmt: skip
    assert (first["cudnn_benchmark"], first["lambda_identity"]) == (False, 0.5)
    setup_fields = ["batch", "precision", "compile", "data", "fused", "cudnn_benchmark", "lambda_identity", "ema_decay"]
    for above, row in zip(rows, rows[1:], strict=False):  # one change per row
        assert sum(above[f] != row[f] for f in setup_fields) == 1, row["change"]
        assert row["vs_previous"] > 0 and row["vs_first"] > 0
    last = rows[-1]
    assert (last["batch"], last["precision"], last["compile"], last["data"], last["fused"]) == (
        2, "bf16", True, "torch", True)  # fmt: skip
    assert last["lambda_identity"] == 0 and last["ema_decay"] == 0.999 and rows[-2]["ema_decay"] == 0
    for row in rows:
        assert row["steps"] == 2 and 0 <= row["data_wait_frac"] <= 1 and row["skipped_steps"] == 0
        assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 0.5)
        # Every compiled row really ran compiled (each from an empty cache) and compiled nothing while timed.
        assert (row["graphs"] > 0) == row["compile"] and row["timed_recompiles"] == 0, row["name"]
    # Identity off: 4 generator passes instead of 6, so the FLOPs per pair drop by about a third.
    assert 0.6 < rows[-2]["tflop_per_pair"] / rows[-3]["tflop_per_pair"] < 0.75
    # FLOPs lie between "every model forward once" and "forward + 2x backward".
    forward = 6 * _forward_flops(Generator(n_residual_blocks=1, ngf=4)) + 6 * _forward_flops(Discriminator(ndf=4))
    assert forward < first["tflop_per_pair"] * 1e12 < 3 * forward


def _forward_flops(model: torch.nn.Module) -> int:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops()


def test_paper_size_flops_counted_on_meta() -> None:
    """1.879 TFLOP per pair-step with the identity terms, 1.287 without (checked by hand: README)."""
    cfg = Config()
    assert count_flops(cfg) == pytest.approx(1.287e12, rel=1e-3)  # the default: lambda_id 0
    cfg.optim.lambda_identity = 0.5
    assert count_flops(cfg) == pytest.approx(1.879e12, rel=1e-3)
    cfg.data.batch_size = 3
    assert count_flops(cfg) == pytest.approx(3 * 1.879e12, rel=1e-3)


def test_single_row_on_synthetic_batches(tmp_path: Path) -> None:
    report_path = tmp_path / "train.json"
    args = ["train", *TINY, "--batch", "2", "--precision", "fp32", "--steps", "2", "--warmup", "1",
            "--profile-steps", "1", "--json", str(report_path)]  # fmt: skip
    assert main(args) == 0
    (row,) = json.loads(report_path.read_text())["rows"]
    assert (row["precision"], row["compile"], row["data"], row["fused"]) == ("fp32", False, "synthetic", True)
    assert "mfu" not in row and "vs_previous" not in row  # no peak known for a CPU; no row above
    ops = [op["op"] for op in row["profile"]]
    assert any("convolution" in op for op in ops) and len(ops) <= 15


def test_ema_row_averages_the_weights_the_step_trains() -> None:
    """The bench's moving average follows the generators its step updates (not a copy of them), as the
    trainer's does: after a step and an update the average has moved towards the trained weights."""
    cfg = Config()
    cfg.model.ngf, cfg.model.ndf, cfg.model.n_residual_blocks = 4, 4, 1
    cfg.data.batch_size, cfg.data.crop_size = 2, 32
    cfg.train.ema_decay = 0.5
    setup = StepSetup("x", "", 2, "fp32", False, "synthetic", True, False, 0.0, ema_decay=0.5)
    step, ema = make_step(cfg, setup, torch.device("cpu"))
    assert ema is not None
    trained, average = ema.sources["real2seg"], ema.averages["real2seg"]
    initial = [p.detach().clone() for p in trained.parameters()]
    step(synthetic_batch(2, 32, torch.device("cpu")))
    assert _distance(trained.parameters(), initial) > 0  # the step trained the very modules the average reads
    gap = _distance(average.parameters(), trained.parameters())
    ema.update(1)
    assert _distance(average.parameters(), trained.parameters()) < gap


def _distance(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    return sum(float((x.detach() - y.detach()).abs().sum()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--batch", "0"], "argument --batch: must be >= 1, got 0"),
        (["--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
        (["--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
        (["--loader", "pil"], "argument --loader: invalid choice: 'pil'"),
        (["--compile-mode", "reduce-overhead"], "argument --compile-mode: invalid choice: 'reduce-overhead'"),
        (["--ema-decay", "1"], "argument --ema-decay: must be in [0, 1), got 1"),
    ],
)
def test_train_bad_arguments_exit_2(argument: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", *argument])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"cyclegan-bench train: error: {message}")


@pytest.mark.parametrize(
    ("gpu", "precision", "peak"),
    [
        ("NVIDIA H200", "bf16", 989.0),
        ("NVIDIA H200 NVL", "bf16", 835.0),
        ("NVIDIA H100 PCIe", "fp32", 378.0),
        ("NVIDIA A100-SXM4-80GB", "fp32", 156.0),
        ("NVIDIA GeForce GTX 1080", "bf16", None),
    ],
)
def test_peak_table_by_gpu_name(gpu: str, precision: str, peak: float | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    assert peak_tflops(torch.device("cuda"), precision, None) == peak
    assert peak_tflops(torch.device("cuda"), precision, 123.0) == 123.0  # --peak-tflops wins
    assert peak_tflops(torch.device("cpu"), precision, None) is None


def test_maps_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PNG rows are exact by construction of the decoder's contract; JPEG rows report what they measured."""
    report_path = tmp_path / "maps.json"
    assert main(["maps", "--sizes", "64x96", "--formats", "png,jpg90", "--maps", "2", "--json", str(report_path)]) == 0
    png, jpeg = json.loads(report_path.read_text())["rows"]
    assert (png["format"], png["correct"], png["snapped"], png["max_edge_distance"]) == ("png", 1.0, 0.0, 0)
    assert jpeg["format"] == "jpg90" and 0.9 < jpeg["correct"] < 1 and jpeg["snapped"] > 0
    assert jpeg["correct"] > jpeg["nearest_correct"] and jpeg["skipped"] == 0
    assert "nearest-colour correct" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["maps", "--formats", "gif"])
    assert exit_.value.code == 2


def test_startup_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command really ran (each --help exits 0) beside import torch; the ratio is to that run's median."""
    report_path = tmp_path / "startup.json"
    assert main(["startup", "--rounds", "1", "--commands", "train,shard", "--json", str(report_path)]) == 0
    rows = {row["command"]: row for row in json.loads(report_path.read_text())["rows"]}
    assert set(rows) == {"python -c 'import torch'", "cyclegan-train --help", "cyclegan-shard --help"}
    torch_s = rows["python -c 'import torch'"]["median_s"]
    for row in rows.values():
        assert row["rounds"] == 1 and row["min_s"] == row["median_s"] > 0
        assert row["vs_import_torch"] == pytest.approx(row["median_s"] / torch_s)
    assert "x import torch" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["startup", "--commands", "train,fit"])
    assert exit_.value.code == 2


@pytest.mark.slow  # a process a row
def test_tiled_report_rows_and_agreement(tmp_path: Path) -> None:
    """Each row a process of its own; tiles agree with the whole image; the largest size is extrapolated."""
    out = tmp_path / "tiled.json"
    args = ["tiled", "--megapixels", "0.01", "0.02", "--tiles", "32", "--ngf", "4", "--blocks", "1",
            "--mode", "classes", "--max-memory", "4", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["size"]) for r in rows] == [
        ("whole", "116x88"), ("tiles 32", "116x88"), ("whole", "164x124"), ("tiles 32", "164x124")
    ]  # fmt: skip
    assert all(r["agreement"].endswith(" ids") and float(r["agreement"].split()[0]) >= 0.999 for r in rows)
    assert all(r["peak_gb"] >= r["before_gb"] > 0 and r["s_per_mp"] > 0 for r in rows)
    assert rows[-1]["largest_mp"] > 0
