"""cyclegan-demo end to end, shrunk by its own options and trainer overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cyclegan.checkpoint import load_network
from cyclegan.demo import main
from cyclegan.palette import DISPLAY_PALETTE

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("layout", ["scene-parsing", "folders", "unpaired"])
def test_demo_writes_generators_grids_and_translations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    """Each on-disk layout: the second the seed's (folders -> shards -> training -> generate with the
    seed's flags, the maps in the display palette), the third two folders of which nothing pairs."""
    tiny = ["--model.ngf", "4", "--model.ndf", "4", "--model.n_residual_blocks", "1",
            "--data.load_size", "36", "--data.crop_size", "32", "--data.batch_size", "2",
            "--data.num_workers", "0"]  # fmt: skip
    assert main(["--out", str(tmp_path), "--images", "8", "--epochs", "1", "--layout", layout, *tiny]) == 0
    run = tmp_path / "run"
    for role in ("real2seg_gen", "seg2real_gen"):
        load_network(run / f"{role}_1.pt")
    assert (run / "samples" / "epoch_1.png").stat().st_size > 0
    assert len(list((tmp_path / "translated" / "photo2seg").glob("*.png"))) == 16  # coloured map + ids per photo
    assert len(list((tmp_path / "translated" / "seg2photo").glob("*.png"))) == 8
    output = capsys.readouterr().out
    assert "done in" in output
    if layout == "folders":
        assert "folders layout" in output and "--palette auto chose ade150" in output
        assert "coloured maps read as 8 ade150" in output  # generate's auto palette on segmented/ maps
        seg = np.asarray(Image.open(next((tmp_path / "translated" / "photo2seg").glob("*_seg.png"))))
        palette = {tuple(c) for c in DISPLAY_PALETTE.tolist()}
        assert {tuple(c) for c in np.unique(seg.reshape(-1, 3), axis=0).tolist()} <= palette
    if layout == "unpaired":
        assert "unpaired: 5 photos" in output and "3 maps of other scenes" in output
        manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
        training = manifest["splits"]["training"]
        assert manifest["format"] == "cyclegan-shard/2"
        assert (training["photos"]["samples"], training["maps"]["samples"]) == (5, 3)
        assert manifest["splits"]["validation"]["samples"] == 8
