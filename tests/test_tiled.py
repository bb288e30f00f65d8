"""Tiled translation gives the whole image's result: each layer's trap on its own, generators of both
modes and directions at sizes no tile divides, the norms' statistics, bounded tile tensors, and the
command line's flags and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.overrides import TorchFunctionMode

from cyclegan.checkpoint import export_network
from cyclegan.generate import main
from cyclegan.inference import Runner, Translator, translate
from cyclegan.models import Generator, ResidualBlock
from cyclegan.palette import NUM_CLASSES
from cyclegan.tiled import Moments, TiledRun, TilingError, generator_plan, plan

CPU = torch.device("cpu")
IDS = NUM_CLASSES + 1


def randomised(module: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Weights far from the near-zero init, so every layer's output varies across the image."""
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, 0.0, std)
    return module.eval()


LAYERS = {
    "reflection-padded 7x7": lambda: [nn.ReflectionPad2d(3), nn.Conv2d(3, 4, 7)],
    "stride 2, zero padding": lambda: [nn.Conv2d(3, 4, 3, 2, 1)],
    "transposed, stride 2": lambda: [nn.ConvTranspose2d(3, 4, 3, 2, 1, output_padding=1)],
    "instance norm, ReLU": lambda: [
        nn.ReflectionPad2d(1),
        nn.Conv2d(3, 4, 3),
        nn.InstanceNorm2d(4),
        nn.ReLU(True),
        nn.Conv2d(4, 4, 3, 2, 1),
    ],  # fmt: skip
    "residual block": lambda: [nn.Conv2d(3, 4, 1), ResidualBlock(4)],
}


@pytest.mark.parametrize("tile", [4, 12])
@pytest.mark.parametrize("layers", LAYERS)
def test_each_layer_in_tiles_equals_the_whole_image(layers, tile):
    net = randomised(nn.Sequential(*LAYERS[layers]()))
    x = torch.randn(1, 3, 20, 28) + 3.0  # an offset the norms must remove
    with torch.inference_mode():
        whole, tiled = net(x), TiledRun(plan(net), tile, CPU, CPU)(x)
    assert whole.std() > 0.1
    assert (tiled - whole).abs().max() < 1e-5


def test_norm_statistics_merge_exactly_where_fp32_sums_cancel():
    x = (1000.0 + torch.randn(1, 2, 2048, 2048)).double()  # 4 M pixels a channel, mean 1000, float32 values
    moments = Moments()
    for rows in range(0, 2048, 512):
        for cols in range(0, 2048, 384):
            moments.add(x[..., rows : rows + 512, cols : cols + 384].float())
    var = x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(moments.m2 / moments.count, var, rtol=1e-5)
    assert torch.allclose(moments.mean, x.mean(dim=(0, 2, 3)), rtol=1e-7)
    x32 = x.float()  # the shortcut the merge avoids: E[x^2] - E[x]^2 in float32 is off by far more
    naive = x32.square().mean(dim=(0, 2, 3)).double() - x32.mean(dim=(0, 2, 3)).double().square()
    assert ((naive - var).abs() / var).max() > 1e-3


KINDS = {  # (mode, input domain): the translator of a randomised small generator
    ("rgb", "photo"): dict(in_channels=3, out_channels=3),
    ("rgb", "seg"): dict(in_channels=3, out_channels=3),
    ("classes", "photo"): dict(in_channels=3, out_channels=IDS, head="logits"),
    ("classes", "seg"): dict(in_channels=IDS, out_channels=3, embed_channels=8),
}


def translator(mode: str, domain: str) -> Translator:
    generator = randomised(Generator(ngf=8, n_residual_blocks=2, **KINDS[mode, domain]))
    return Translator(generator, domain, mode).eval()


def inputs(domain: str, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random photos, or id maps of random 4x6 blocks, of a size no tile divides."""
    gen = torch.Generator().manual_seed(seed)
    if domain == "photo":
        coarse = torch.randint(0, 256, (1, 3, height // 4 + 1, width // 6 + 1), generator=gen).float()
        return F.interpolate(coarse, size=(height, width), mode="bilinear").round().to(torch.uint8)
    coarse = torch.randint(0, IDS, (1, 1, height // 4 + 1, width // 6 + 1), generator=gen).float()
    return F.interpolate(coarse, size=(height, width), mode="nearest")[:, 0].long()


@pytest.mark.parametrize("mode, domain", KINDS)
def test_generators_in_tiles_equal_whole_images(mode, domain):
    run = translator(mode, domain)
    x = inputs(domain, 68, 100)
    with torch.inference_mode():
        whole = Runner(run, CPU, tile=0)(x)
        for tile in (8, 24, 36):
            tiled = Runner(run, CPU, tile=tile)(x)
            assert tiled.shape == whole.shape
            if domain == "photo":  # class ids
                assert len(whole.unique()) >= 4
                assert (tiled == whole).double().mean() >= 0.999
            else:  # uint8 photos
                assert whole.float().std() > 10
                assert (tiled.int() - whole.int()).abs().max() <= 2


@pytest.mark.parametrize("mode, domain", KINDS)
def test_bf16_tiles_stay_as_close_to_fp32_as_bf16_whole_images(mode, domain):
    """The stated bf16 bound (README): ids >= 90 % equal (rgb's nearest-colour decode is the touchy one),
    photos within 16 levels and 1.5 on average of fp32, and tiles no further from fp32 than the whole bf16
    image is (1 point of ids, 1 level)."""
    run = translator(mode, domain)
    x = inputs(domain, 68, 100)
    with torch.inference_mode():
        fp32 = Runner(run, CPU, tile=0)(x)
        whole, tiled = (Runner(run, CPU, tile=tile, amp=True)(x) for tile in (0, 24))
    if domain == "photo":
        same = [(y == fp32).double().mean().item() for y in (whole, tiled)]
        assert min(same) >= 0.9 and same[1] >= same[0] - 0.01
    else:
        off = [(y.float() - fp32.float()).abs() for y in (whole, tiled)]
        assert max(o.max() for o in off) <= 16 and max(o.mean() for o in off) <= 1.5
        assert off[1].mean() <= off[0].mean() + 1


def test_naive_tiles_have_seams_that_exact_tiles_do_not():
    """What the exact passes are for: translating 4 tiles on their own differs at every tile."""
    run = translator("rgb", "seg")
    x = inputs("seg", 64, 64)
    with torch.inference_mode():
        whole = Runner(run, CPU, tile=0)(x).int()
        naive = torch.cat([torch.cat([run(x[:, r : r + 32, c : c + 32]) for c in (0, 32)], -1) for r in (0, 32)], -2)
        exact = Runner(run, CPU, tile=32)(x).int()
    assert (naive.int() - whole).abs().max() > 20
    assert (exact - whole).abs().max() <= 2


class ConvInputs(TorchFunctionMode):
    """The largest input any convolution sees (elements)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (F.conv2d, F.conv_transpose2d, torch.conv2d, torch.conv_transpose2d):
            self.largest = max(self.largest, args[0].numel())
        return func(*args, **(kwargs or {}))


def test_tile_tensors_do_not_grow_with_the_image():
    run = translator("classes", "photo")
    seen = {}
    with torch.inference_mode():
        for side in (64, 160):
            for tile in (0, 16):
                with ConvInputs() as mode:
                    Runner(run, CPU, tile=tile)(inputs("photo", side, side))
                seen[side, tile] = mode.largest
    assert seen[64, 16] == seen[160, 16] < seen[64, 0] < seen[160, 0]


def test_eval_translate_tiles_the_same():
    generator = randomised(Generator(ngf=8, n_residual_blocks=1))
    x = torch.randn(2, 3, 38, 54)  # padded to 40 x 56 and cropped back
    with torch.no_grad():
        assert (translate(generator, x, tile=16) - translate(generator, x)).abs().max() < 1e-5


def test_unknown_layers_and_bad_tiles_are_refused():
    with pytest.raises(TilingError, match="BatchNorm2d"):
        plan([nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)])
    with pytest.raises(TilingError, match="multiple of 4"):
        TiledRun(generator_plan(Generator(ngf=4, n_residual_blocks=1)), 6, CPU, CPU)


# --- cyclegan-generate ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tiled_gens")
    return {
        f"{mode}-{domain}": export_network(
            translator(mode, domain).generator,
            "real2seg" if domain == "photo" else "seg2real",
            directory / f"{mode}_{domain}_gen_1.pt",
            epoch=1,
            seg_mode=mode,
        )
        for mode, domain in KINDS
    }


def write_input(domain: str, path: Path, height: int, width: int) -> Path:
    x = inputs(domain, height, width, seed=3)
    array = x[0].permute(1, 2, 0).numpy() if domain == "photo" else x[0].numpy().astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def generate(generator: Path, source: Path, out: Path, *flags: str) -> list[np.ndarray]:
    code = main(["--input", str(source), "--generator", str(generator), "--output-dir", str(out), *flags])
    assert code == 0
    return [np.asarray(Image.open(p)) for p in sorted(out.iterdir())]


@pytest.mark.parametrize("mode, domain", KINDS)
def test_own_size_tiled_files_equal_whole_files(exported, mode, domain, tmp_path, capsys):
    source = write_input(domain, tmp_path / "in.png", 45, 70)  # sides not multiples of 4 or of the tile
    whole = generate(exported[f"{mode}-{domain}"], source, tmp_path / "whole", "--own-size", "--tile", "0")
    tiled = generate(exported[f"{mode}-{domain}"], source, tmp_path / "tiled", "--own-size", "--tile", "16")
    for a, b in zip(whole, tiled, strict=True):
        assert a.shape[:2] == (45, 70)
        if domain == "photo":
            assert (a == b).all(axis=-1 if a.ndim == 3 else None).mean() >= 0.999
        else:
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_budget_too_small_for_whole_tiles_with_a_note(exported, tmp_path, capsys):
    source = write_input("photo", tmp_path / "big.png", 96, 128)
    generator = exported["classes-photo"]
    whole = generate(generator, source, tmp_path / "whole", "--own-size", "--tile", "0")
    capsys.readouterr()
    tiled = generate(generator, source, tmp_path / "auto", "--own-size", "--max-memory", "0.004")
    err = capsys.readouterr().err
    assert "big.png (128x96) runs in " in err and "-pixel tiles" in err
    assert all((a == b).mean() >= 0.999 for a, b in zip(whole, tiled, strict=True))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tile", "6"], "--tile 6: must be 0 (whole images) or a positive multiple of 4"),
        (["--max-memory", "0.00001"], "too large even in 8-pixel tiles"),
        (["--tile", "0", "--max-memory", "0.00001"], "a whole image needs about"),
        (["--own-size", "--width", "64"], "--own-size: translates each image at its own size"),
        (["--max-memory", "0"], "--max-memory: must be > 0 GB"),
    ],
)
def test_bad_tiling_requests_are_one_line(exported, flags, message, tmp_path, capsys):
    source = write_input("photo", tmp_path / "in.png", 40, 48)
    args = ["--input", str(source), "--generator", str(exported["rgb-photo"]), "--output-dir", str(tmp_path / "o")]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cyclegan-generate: error: ") and message in err, err


def test_onnx_generator_says_tiling_needs_the_pt_file(tmp_path, capsys):
    fake = tmp_path / "real2seg.onnx"
    fake.write_bytes(b"not read: the flags are refused first")
    source = write_input("photo", tmp_path / "in.png", 40, 48)
    args = ["--input", str(source), "--generator", str(fake), "--output-dir", str(tmp_path / "o"), "--tile", "16"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"cyclegan-generate: error: {fake}: --tile and --amp need the generator's .pt file: "
                   "an ONNX graph runs whole images in the precision it was exported in")  # fmt: skip
