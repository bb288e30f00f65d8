"""cyclegan-bench: the report's shape and arithmetic (speed itself is never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cyclegan.bench import main
from cyclegan.data.shard import main as shard_main


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
