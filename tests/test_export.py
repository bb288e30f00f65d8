"""cyclegan-export: ONNX and torch.export graphs of both generators in both seg modes, checked against
PyTorch on the tests' own images at two sizes, and run by cyclegan-generate through onnxruntime."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from cyclegan import export, generate
from cyclegan.checkpoint import export_network, load_network
from cyclegan.inference import translator_for
from cyclegan.models import Discriminator, Generator
from cyclegan.palette import NUM_CLASSES

pytestmark = pytest.mark.slow  # each ONNX export traces the graph: seconds
SIZES = ("48", "64"), ("40", "72")  # --height, --width: two shapes, neither the tracing shape


def tiny_generator(path: Path, role: str, mode: str, seed: int) -> Path:
    """A randomly initialised small generator (not a hand-made one: real float arithmetic to disagree on)."""
    torch.manual_seed(seed)
    channels = {("real2seg", "classes"): (3, NUM_CLASSES + 1), ("seg2real", "classes"): (NUM_CLASSES + 1, 3)}
    in_ch, out_ch = channels.get((role, mode), (3, 3))
    extra = {"head": "logits"} if (role, mode) == ("real2seg", "classes") else {}
    if (role, mode) == ("seg2real", "classes"):
        extra = {"embed_channels": 8}
    generator = Generator(in_ch, out_ch, n_residual_blocks=1, ngf=8, **extra)
    return export_network(generator, role, path, epoch=2, seg_mode=mode, weights="ema")


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int64)


@pytest.mark.parametrize(("role", "mode"), [("real2seg", "rgb"), ("seg2real", "classes")])
def test_onnx_generate_matches_pytorch_generate(role, mode, scene_parsing_dataset, tmp_path, capsys):
    """Export, then translate the dataset's validation images (photos, or their label maps) with the
    .pt file and with the .onnx file at two model sizes: the same outputs within the tolerances."""
    pt = tiny_generator(tmp_path / f"{role}_gen_2.pt", role, mode, seed=3)
    onnx_file = tmp_path / f"{role}.onnx"
    assert export.main(["--generator", str(pt), "--format", "onnx", "--out", str(onnx_file)]) == 0
    out = capsys.readouterr().out
    assert out.count("cyclegan-export: check ") == 2 and f"{mode} mode, ema weights" in out
    stored = json.loads({p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}["cyclegan"])
    assert (stored["role"], stored["seg_mode"], stored["weights"], stored["epoch"]) == (role, mode, "ema", 2)

    folder = "images" if role == "real2seg" else "annotations"
    inputs = scene_parsing_dataset / folder / "validation"
    for height, width in SIZES:
        results = {}
        for name, model in (("pt", pt), ("onnx", onnx_file)):
            target = tmp_path / f"{name}_{height}x{width}"
            assert generate.main(["--input", str(inputs), "--generator", str(model), "--output-dir", str(target),
                                  "--height", height, "--width", width, "--output-size", "model"]) == 0  # fmt: skip
            results[name] = sorted(target.iterdir())
        assert [p.name for p in results["pt"]] == [p.name for p in results["onnx"]] and results["pt"]
        for a, b in zip(results["pt"], results["onnx"], strict=True):
            x, y = read(a), read(b)
            assert x.shape[:2] == (int(height), int(width))
            if a.name.endswith("_ids.png"):
                assert (x != y).mean() <= 0.001, a.name
            else:
                assert np.abs(x - y).max() <= 1, a.name
    assert "ONNX" in capsys.readouterr().out


@pytest.mark.parametrize(("role", "mode"), [("real2seg", "classes"), ("seg2real", "rgb")])
def test_torch_export_round_trip_on_real_images(role, mode, scene_parsing_dataset, tmp_path, capsys):
    pt = tiny_generator(tmp_path / f"{role}_gen_2.pt", role, mode, seed=4)
    program = tmp_path / f"{role}.pt2"
    assert export.main(["--generator", str(pt), "--format", "torch-export", "--out", str(program)]) == 0
    loaded = torch.export.load(str(program)).module()
    generator, meta = load_network(pt, kind="generator")
    module = translator_for(generator, meta).eval()
    folder = "images" if role == "real2seg" else "annotations"
    path = sorted((scene_parsing_dataset / folder / "validation").iterdir())[0]
    image = torch.from_numpy(np.array(Image.open(path)))
    x = image.permute(2, 0, 1) if role == "real2seg" else image.long()
    for height, width in ((48, 64), (40, 72)):
        crop = x[..., :height, :width][None]
        with torch.no_grad():
            expected, got = module(crop), loaded(crop)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        if role == "real2seg":
            assert (got != expected).float().mean() <= 0.001
        else:
            assert (got.int() - expected.int()).abs().max() <= 1


def test_bad_onnx_files_are_one_line_and_exit_2(scene_parsing_dataset, tmp_path, capsys):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    foreign = tmp_path / "foreign.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )  # fmt: skip
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(foreign))
    photos = scene_parsing_dataset / "images" / "validation"
    for model, needle in [(garbage, "not an ONNX model onnxruntime can load"),
                          (foreign, "without cyclegan-export's metadata"),
                          (tmp_path / "missing.onnx", "no such file")]:  # fmt: skip
        args = ["--input", str(photos), "--generator", str(model), "--output-dir", str(tmp_path / "o")]
        assert generate.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("cyclegan-generate: error: ") and err.count("\n") == 1 and needle in err, err
    disc = export_network(Discriminator(ndf=8), "seg", tmp_path / "seg_disc_2.pt", epoch=2)
    assert export.main(["--generator", str(disc), "--format", "onnx", "--out", str(tmp_path / "d.onnx")]) == 2
    assert "discriminator" in capsys.readouterr().err
