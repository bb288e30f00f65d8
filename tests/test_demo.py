"""cyclegan-demo end to end, shrunk by its own options and trainer overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclegan.checkpoint import load_network
from cyclegan.demo import main

pytestmark = pytest.mark.slow


def test_demo_writes_generators_grids_and_translations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["--model.ngf", "4", "--model.ndf", "4", "--model.n_residual_blocks", "1",
            "--data.load_size", "36", "--data.crop_size", "32", "--data.batch_size", "2"]  # fmt: skip
    assert main(["--out", str(tmp_path), "--images", "8", "--epochs", "1", *tiny]) == 0
    run = tmp_path / "run"
    for role in ("real2seg_gen", "seg2real_gen"):
        load_network(run / f"{role}_1.pt")
    assert (run / "samples" / "epoch_1.png").stat().st_size > 0
    assert len(list((tmp_path / "translated" / "photo2seg").glob("*.png"))) == 16  # coloured map + ids per photo
    assert len(list((tmp_path / "translated" / "seg2photo").glob("*.png"))) == 8
    assert "done in" in capsys.readouterr().out
