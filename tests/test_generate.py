import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gen_fixtures import (
    HIGH_CLASS,
    LOW_CLASS,
    block_labels,
    export_class_generators,
    export_generators,
    photo_for,
    predicted_for,
    write_evil_pickle,
)
from PIL import Image

from cyclegan.checkpoint import CheckpointManager, export_network
from cyclegan.generate import main, read_input
from cyclegan.inference import translate
from cyclegan.models import Discriminator
from cyclegan.palette import DISPLAY_PALETTE, TRAIN_PALETTE
from cyclegan.state import PER_RANK, TrainState

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    return export_generators(tmp_path_factory.mktemp("gens"))


def save(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def read(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_seed_flags_work_as_written(generators, tmp_path):
    """The seed's exact command line, run as a program."""
    labels = block_labels(256, 256, seed=0)
    save(photo_for(labels), tmp_path / "test.jpg")
    gen_path = tmp_path / "out" / "real2seg_gen_50.pt"
    gen_path.parent.mkdir()
    gen_path.write_bytes(generators[0].read_bytes())
    cmd = "--image_file test.jpg --file_width 256 --file_height 256 --channels 3"
    cmd += " --dir_to_generator out/real2seg_gen_50.pt --save_directory out/translated"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "cyclegan.generate", *cmd.split()], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    ids = read(tmp_path / "out/translated/test_ids.png")
    seg = read(tmp_path / "out/translated/test_seg.png")
    assert np.array_equal(ids, predicted_for(labels))
    assert np.array_equal(seg, TRAIN_PALETTE.numpy()[ids])


def test_photo_to_seg_exact_at_native_size(generators, tmp_path, capsys):
    labels = block_labels(48, 64, seed=1)
    save(photo_for(labels), tmp_path / "in" / "a.png")
    code, out, _ = run_cli(
        ["--input", tmp_path / "in/a.png", "--generator", generators[0], "--output-dir", tmp_path / "out"]
        + ["--width", 64, "--height", 48],
        capsys,
    )
    assert code == 0 and "photo -> seg" in out
    ids = read(tmp_path / "out/a_ids.png")
    assert Image.open(tmp_path / "out/a_ids.png").mode == "L"
    assert np.array_equal(ids, predicted_for(labels))
    assert np.array_equal(read(tmp_path / "out/a_seg.png"), TRAIN_PALETTE.numpy()[ids])


def test_folder_glob_batches_and_output_size(generators, tmp_path, capsys):
    sizes = {"a": (48, 64), "b": (32, 40), "c": (56, 32)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        save(photo_for(block_labels(h, w, seed=i)), tmp_path / ("dir" if name != "c" else "other") / f"{name}.png")
    (tmp_path / "dir" / "notes.txt").write_text("not an image, skipped in folders")
    common = ["--generator", generators[0], "--batch-size", 2, "--width", 32, "--height", 32]
    inputs = ["--input", tmp_path / "dir", tmp_path / "other" / "*.png"]
    assert run_cli(inputs + common + ["--output-dir", tmp_path / "native"], capsys)[0] == 0
    assert run_cli(inputs + common + ["--output-dir", tmp_path / "model", "--output-size", "model"], capsys)[0] == 0
    for name, (h, w) in sizes.items():
        assert read(tmp_path / "native" / f"{name}_ids.png").shape == (h, w)
        assert read(tmp_path / "model" / f"{name}_seg.png").shape == (32, 32, 3)
    assert len(list((tmp_path / "native").iterdir())) == 6


def write_map_inputs(directory: Path) -> np.ndarray:
    """One label map three ways: a class-id PNG, a palette PNG and a colour map off by up to 20 per channel.
    Its three colours are (nearly) in the ade150 palette too, so tests read it with ``--palette train``."""
    labels = block_labels(32, 48, seed=2, classes=(0, HIGH_CLASS, LOW_CLASS))
    colours = TRAIN_PALETTE[torch.from_numpy(labels).long()].numpy().astype(np.int16)
    noisy = np.clip(colours + np.random.default_rng(0).integers(-20, 21, colours.shape), 0, 255).astype(np.uint8)
    save(labels, directory / "ids.png")
    save(labels, directory / "pal.png", mode="P")
    save(noisy, directory / "colours.png")
    return labels


def test_seg_to_photo_takes_ids_or_colours(generators, tmp_path, capsys):
    labels = write_map_inputs(tmp_path / "in")
    code, _, _ = run_cli(
        ["--input", tmp_path / "in", "--generator", generators[1], "--output-dir", tmp_path / "out"]
        + ["--width", 48, "--height", 32, "--palette", "train"],
        capsys,
    )
    assert code == 0
    expected = np.where(labels == HIGH_CLASS, 255, 0)[..., None].repeat(3, axis=-1)
    for name in ("ids", "pal", "colours"):
        assert np.array_equal(read(tmp_path / "out" / f"{name}_photo.png"), expected), name


def test_palette_ade150_for_maps_written_and_read(generators, tmp_path, capsys):
    """--palette ade150: photo -> seg draws in the display palette, and seg -> photo reads maps in it
    (PNG exactly, JPEG through the sharder's snapping), as a seed user's segmented/ folder holds."""
    labels = block_labels(48, 64, seed=1)
    save(photo_for(labels), tmp_path / "photos" / "a.png")
    common = ["--width", 64, "--height", 48, "--palette", "ade150"]
    code, _, _ = run_cli(["--input", tmp_path / "photos", "--generator", generators[0], "--output-dir",
                          tmp_path / "seg", *common], capsys)  # fmt: skip
    assert code == 0
    ids = read(tmp_path / "seg" / "a_ids.png")
    assert np.array_equal(ids, predicted_for(labels))
    assert np.array_equal(read(tmp_path / "seg" / "a_seg.png"), DISPLAY_PALETTE.numpy()[ids])

    drawn = block_labels(48, 64, seed=2, classes=(0, HIGH_CLASS, LOW_CLASS))
    save(DISPLAY_PALETTE.numpy()[drawn], tmp_path / "maps" / "png.png")
    Image.fromarray(DISPLAY_PALETTE.numpy()[drawn]).save(tmp_path / "maps" / "jpg.jpg", quality=90)
    code, _, _ = run_cli(["--input", tmp_path / "maps", "--generator", generators[1], "--output-dir",
                          tmp_path / "photo", *common], capsys)  # fmt: skip
    assert code == 0
    expected = np.where(drawn == HIGH_CLASS, 255, 0)[..., None].repeat(3, axis=-1)
    assert np.array_equal(read(tmp_path / "photo" / "png_photo.png"), expected)
    assert (read(tmp_path / "photo" / "jpg_photo.png") == expected).all(-1).mean() > 0.97

    foreign = np.array([[77, 1, 200], [13, 140, 77], [200, 90, 170]], dtype=np.uint8)  # no ade150 colour near
    save(foreign[np.searchsorted([0, LOW_CLASS, HIGH_CLASS], drawn)], tmp_path / "foreign" / "f.png")
    code, _, err = run_cli(["--input", tmp_path / "foreign", "--generator", generators[1], "--output-dir",
                            tmp_path / "photo2", *common], capsys)  # fmt: skip
    assert code == 2
    assert err.strip().startswith(f"cyclegan-generate: error: {tmp_path / 'foreign' / 'f.png'}: not a segmentation "
                                  "map in the ade150 palette")  # fmt: skip


def test_auto_palette_reads_each_map_as_what_it_is(generators, tmp_path, capsys):
    """Without --palette, ade150 maps and training-palette maps (PNG and JPEG q90) in one folder are
    each read in their own palette: the PNGs' photos equal the one made from the class-id PNG, and
    the JPEGs (8-pixel blocks of saturated colours, a hard case) decode to the drawn ids but for a
    few edge pixels."""
    labels = block_labels(48, 64, seed=3, classes=(0, HIGH_CLASS, LOW_CLASS, 21, 30, 114, 125, 136))
    save(labels, tmp_path / "in" / "ids.png")
    for name, palette in (("ade", DISPLAY_PALETTE), ("train", TRAIN_PALETTE)):
        save(palette.numpy()[labels], tmp_path / "in" / f"{name}_png.png")
        Image.fromarray(palette.numpy()[labels]).save(tmp_path / "in" / f"{name}_jpg.jpg", quality=90)
    code, out, _ = run_cli(["--input", tmp_path / "in", "--generator", generators[1], "--output-dir",
                            tmp_path / "out", "--width", 64, "--height", 48], capsys)  # fmt: skip
    assert code == 0
    assert "coloured maps read as 2 ade150, 2 train" in out
    reference = read(tmp_path / "out" / "ids_photo.png")
    assert reference.min() == 0 and reference.max() == 255  # both output colours occur
    for name in ("ade_png", "train_png"):
        assert np.array_equal(read(tmp_path / "out" / f"{name}_photo.png"), reference), name
    for name in ("ade_jpg", "train_jpg"):
        ids, _ = read_input(tmp_path / "in" / f"{name}.jpg", "seg")
        assert (ids.numpy() == labels).mean() > 0.97, name  # nearest colour: 0.81 (train), 0.76 (ade150)


@pytest.fixture(scope="module")
def class_generators(tmp_path_factory):
    return export_class_generators(tmp_path_factory.mktemp("class_gens"))


def test_classes_mode_photo_to_seg_writes_the_argmax(class_generators, tmp_path, capsys):
    """The mode comes from the file: ids are the logits' argmax, drawn in the training palette."""
    labels = block_labels(48, 64, seed=1)
    save(photo_for(labels), tmp_path / "in" / "a.png")
    code, out, _ = run_cli(
        ["--input", tmp_path / "in/a.png", "--generator", class_generators[0], "--output-dir", tmp_path / "out"]
        + ["--width", 64, "--height", 48, "--channels", 3],
        capsys,
    )
    assert code == 0 and "photo -> seg (classes mode)" in out
    ids = read(tmp_path / "out/a_ids.png")
    assert np.array_equal(ids, predicted_for(labels))
    assert np.array_equal(read(tmp_path / "out/a_seg.png"), TRAIN_PALETTE.numpy()[ids])


def test_classes_mode_seg_to_photo_takes_ids_or_colours(class_generators, tmp_path, capsys):
    """Class-id PNGs, palette PNGs and (noisy) colour maps all become one-hot class maps."""
    labels = write_map_inputs(tmp_path / "in")
    code, out, _ = run_cli(
        ["--input", tmp_path / "in", "--generator", class_generators[1], "--output-dir", tmp_path / "out"]
        + ["--width", 48, "--height", 32, "--channels", 1, "--palette", "train"],
        capsys,
    )
    assert code == 0 and "seg -> photo (classes mode)" in out
    expected = np.where(np.isin(labels, (0, HIGH_CLASS)), 255, 0)[..., None].repeat(3, axis=-1)
    for name in ("ids", "pal", "colours"):
        assert np.array_equal(read(tmp_path / "out" / f"{name}_photo.png"), expected), name
    code, _, err = run_cli(["--input", tmp_path / "in", "--generator", class_generators[1], "--output-dir",
                            tmp_path / "out2", "--channels", 2], capsys)  # fmt: skip
    assert code == 2 and "takes 1 or 3-channel seg images, but --channels is 2" in err


def test_translate_pads_to_multiples_of_4():
    seen = []

    def generator(x):
        seen.append(tuple(x.shape[-2:]))
        return x * 2

    x = torch.rand(2, 3, 30, 41)
    assert torch.equal(translate(generator, x), x * 2)
    assert seen == [(32, 44)]


def bad_case(name: str, tmp_path: Path, generators: tuple[Path, Path]) -> tuple[list, Path]:
    """(extra CLI args, the file the error must name) for one kind of bad input."""
    photo = save(photo_for(block_labels(32, 32, seed=3)), tmp_path / "photo.png")
    real2seg, seg2real = generators
    if name == "missing":
        return ["--input", tmp_path / "nope.jpg", "--generator", real2seg], tmp_path / "nope.jpg"
    if name == "not_an_image":
        fake = tmp_path / "fake.jpg"
        fake.write_text("hello")
        return ["--input", fake, "--generator", real2seg], fake
    if name == "truncated":
        cut = tmp_path / "cut.png"
        data = photo.read_bytes()
        cut.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
        return ["--input", cut, "--generator", real2seg], cut
    if name == "rgba_photo":
        rgba = save(photo_for(block_labels(32, 32, seed=3)), tmp_path / "rgba.png", mode="RGBA")
        return ["--input", rgba, "--generator", real2seg], rgba
    if name == "two_channel_map":
        la = save(block_labels(32, 32, seed=3), tmp_path / "la.png", mode="LA")
        return ["--input", la, "--generator", seg2real], la
    if name == "ids_over_150":
        ids = save(np.full((32, 32), 200, np.uint8), tmp_path / "ids.png")
        return ["--input", ids, "--generator", seg2real], ids
    if name == "channels_flag":
        return ["--input", photo, "--generator", real2seg, "--channels", 1], real2seg
    if name == "discriminator":
        disc = export_network(Discriminator(ndf=8), "real", tmp_path / "real_disc_3.pt", epoch=3)
        return ["--input", photo, "--generator", disc], disc
    if name == "training_state":
        manager = CheckpointManager(tmp_path / "checkpoints", rank=0, world_size=1, keep=1, per_rank=PER_RANK)
        state = manager.save({"train": TrainState()}, step=1, meta={}) / "shared.pt"
        return ["--input", photo, "--generator", state], state
    if name == "pickle":
        evil = write_evil_pickle(tmp_path / "evil.pt", tmp_path / "pwned")
        return ["--input", photo, "--generator", evil], evil
    raise AssertionError(name)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "name",
    [
        "missing",
        "not_an_image",
        "truncated",
        "rgba_photo",
        "two_channel_map",
        "ids_over_150",
        "channels_flag",
        "discriminator",
        "training_state",
        "pickle",
    ],
)
def test_bad_input_one_line_exit_2(name, generators, tmp_path, capsys):
    args, culprit = bad_case(name, tmp_path, generators)
    code, out, err = run_cli(args + ["--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"cyclegan-generate: error: {culprit}: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "pwned").exists()  # the pickle's payload never ran


def test_existing_outputs_kept_unless_overwrite(generators, tmp_path, capsys):
    save(photo_for(block_labels(32, 32, seed=4)), tmp_path / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x_ids.png").write_bytes(b"precious")
    args = ["--input", tmp_path / "x.png", "--generator", generators[0], "--output-dir", out]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and f"{out / 'x_ids.png'}: already exists" in err
    assert (out / "x_ids.png").read_bytes() == b"precious" and not (out / "x_seg.png").exists()
    assert run_cli(args + ["--overwrite"], capsys)[0] == 0
    assert read(out / "x_ids.png").shape == (32, 32)


def test_same_stem_twice_is_refused(generators, tmp_path, capsys):
    for folder in ("a", "b"):
        save(photo_for(block_labels(32, 32, seed=5)), tmp_path / folder / "x.png")
    code, _, err = run_cli(
        ["--input", tmp_path / "a/x.png", tmp_path / "b/x.png", "--generator", generators[0]]
        + ["--output-dir", tmp_path / "out"],
        capsys,
    )
    assert code == 2 and "same file stem" in err


def test_model_size_rounded_to_multiple_of_4(generators, tmp_path, capsys):
    save(photo_for(block_labels(32, 32, seed=6)), tmp_path / "x.png")
    code, _, err = run_cli(
        ["--input", tmp_path / "x.png", "--generator", generators[0], "--output-dir", tmp_path / "out"]
        + ["--file_width", 30, "--file_height", 33, "--output-size", "model"],
        capsys,
    )
    assert code == 0 and "width 30 rounded to 32" in err and "height 33 rounded to 32" in err
    assert read(tmp_path / "out/x_ids.png").shape == (32, 32)
