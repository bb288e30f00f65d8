"""cyclegan-shard: both layouts, sample round trip, bad inputs, determinism, resume, DALI index."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import PIL
import pytest
import webdataset as wds
from PIL import Image, ImageOps

from cyclegan.ade150 import DISPLAY_COLOURS
from cyclegan.data import shard as shard_module
from cyclegan.data import shard_writer
from cyclegan.data.catalog import DOMAINS, PAIRED_FORMAT, UNPAIRED_FORMAT
from cyclegan.data.shard import main
from cyclegan.data.synthetic import CLASS_MAP_FILE, FOLDER_NAMES, FULL_IDS, make_synthetic_ade20k, scene_labels
from cyclegan.label_maps import DEFAULT_MAX_UNKNOWN, DEFAULT_TOLERANCE, describe_duplicates
from cyclegan.palette import DISPLAY_PALETTE, TRAIN_PALETTE

REPO = Path(__file__).resolve().parents[1]


def run(root: Path, out: Path, *extra: str) -> int:
    return main(["--root", str(root), "--out", str(out), "--workers", "1", *extra])


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def read_split(out: Path, split: str) -> list[dict]:
    """Samples of a split in shard order, read back with the webdataset library."""
    urls = [str(out / name) for name in manifest(out)["splits"][split]["shards"]]
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def output_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def annotation_of(dataset: Path, split: str, key: str) -> Path:
    return dataset / "annotations" / split / f"{key}.png"


def test_scene_parsing_round_trip(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    assert run(scene_parsing_dataset, tmp_path, "--samples-per-shard", "4") == 0
    info = manifest(tmp_path)
    for split, count in (("training", 10), ("validation", 3)):
        summary = info["splits"][split]
        assert summary["samples"] == count and summary["skipped"] == []
        assert sum(summary["shard_samples"]) == count
        for name in summary["shards"]:
            assert (tmp_path / name).is_file() and (tmp_path / name.replace(".tar", ".idx")).is_file()
        samples = read_split(tmp_path, split)
        keys = [s["__key__"] for s in samples]
        assert len(keys) == count and keys != sorted(keys), "samples are shuffled across shards"
        pixels = np.zeros(151, dtype=np.int64)
        for sample in samples:
            assert set(sample) >= {"jpg", "label.png", "json"} and "." not in sample["__key__"]
            meta = json.loads(sample["json"])
            source = scene_parsing_dataset / meta["photo"]
            photo, label = image(sample["jpg"]), image(sample["label.png"])
            assert (photo.format, photo.mode, label.mode) == ("JPEG", "RGB", "L")
            expected = np.asarray(Image.open(annotation_of(scene_parsing_dataset, split, meta["key"])))
            np.testing.assert_array_equal(np.asarray(label), expected)
            assert photo.size == label.size == tuple(meta["size"]) == tuple(meta["original_size"])
            assert meta["scene"] in {"street", "lake_natural", "field_wild"}
            if Image.open(source).mode == "RGB":
                assert sample["jpg"] == source.read_bytes(), "unchanged photos keep their bytes"
            else:  # grayscale photos are converted
                gray = np.asarray(Image.open(source), dtype=float)
                assert np.abs(np.asarray(photo.convert("L"), dtype=float) - gray).mean() < 3
            pixels += np.bincount(expected.ravel(), minlength=151)
        assert summary["class_pixels"] == pixels.tolist()


def test_full_layout_matches_scene_parsing(scene_parsing_dataset: Path, full_dataset: Path, tmp_path: Path) -> None:
    """Same scenes in both layouts: the class map turns R/10*256+G back into the 150-class labels."""
    class_map = full_dataset / CLASS_MAP_FILE
    assert run(full_dataset, tmp_path / "full", "--class-map", str(class_map)) == 0
    assert run(scene_parsing_dataset, tmp_path / "sp") == 0
    full = {s["__key__"]: s for s in read_split(tmp_path / "full", "training")}
    reference = {s["__key__"]: s for s in read_split(tmp_path / "sp", "training")}
    assert full.keys() == reference.keys()
    for key, sample in full.items():
        assert sample["label.png"] == reference[key]["label.png"]
        assert sample["jpg"] == reference[key]["jpg"]
        meta = json.loads(sample["json"])
        assert meta["annotation"].endswith(f"{key}_seg.png") and meta["scene"] in {
            "street",
            "lake_natural",
            "field_wild",
        }
    labels = np.concatenate([np.asarray(image(s["label.png"])).ravel() for s in full.values()])
    assert 0 in labels, "the unmapped traffic cone becomes 0"

    # The same map as CSV with a header gives the same shards.
    csv_map = tmp_path / "map.csv"
    csv_map.write_text("full_id,ade150_id\n" + "".join(f"{full},{ade}\n" for ade, full in FULL_IDS.items()))
    assert run(full_dataset, tmp_path / "csv", "--class-map", str(csv_map)) == 0
    assert output_files(tmp_path / "csv") == output_files(tmp_path / "full")


def test_layout_detection(scene_parsing_dataset: Path, full_dataset: Path, tmp_path: Path, capsys) -> None:
    assert run(full_dataset.parent, tmp_path / "a", "--class-map", str(full_dataset / CLASS_MAP_FILE)) == 0
    assert f"full layout at {full_dataset}" in capsys.readouterr().out

    with pytest.raises(SystemExit) as exit_info:  # full layout, no class map: usage error saying what is needed
        run(full_dataset, tmp_path / "b")
    assert exit_info.value.code == 2
    assert "--class-map" in (err := capsys.readouterr().err) and "objects.txt" in err

    both = tmp_path / "both"
    shutil.copytree(scene_parsing_dataset, both / scene_parsing_dataset.name)
    shutil.copytree(full_dataset, both / full_dataset.name)
    assert run(both, tmp_path / "c") == 1
    assert "pick one" in capsys.readouterr().err
    assert run(both, tmp_path / "d", "--layout", "scene-parsing") == 0
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", tmp_path / "e") == 1
    assert "no ADE20K layout found" in capsys.readouterr().err


def test_class_map_validation(full_dataset: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({"1046": 200}))
    assert run(full_dataset, tmp_path / "out", "--class-map", str(bad)) == 1
    assert "out of range" in capsys.readouterr().err
    bad.write_text("[1, 2]")
    assert run(full_dataset, tmp_path / "out", "--class-map", str(bad)) == 1
    assert "not a class map" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--samples-per-shard", "0"],
        ["--workers", "-1"],
        ["--short-side", "big"],
        ["--splits", "training,train"],
        ["--layout", "coco"],
        ["--class-map", "/nonexistent.json"],
    ],
)
def test_invalid_arguments(scene_parsing_dataset: Path, tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(scene_parsing_dataset, tmp_path, *argv)
    assert exit_info.value.code == 2


def test_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path / "nowhere", tmp_path / "out")
    assert exit_info.value.code == 2


def test_short_side_resizes_photo_and_label(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    assert run(scene_parsing_dataset, tmp_path, "--short-side", "40", "--splits", "validation") == 0
    for sample in read_split(tmp_path, "validation"):
        meta = json.loads(sample["json"])
        photo, label = image(sample["jpg"]), image(sample["label.png"])
        assert photo.size == label.size == tuple(meta["size"]) and min(photo.size) == 40
        assert meta["size"] != meta["original_size"]
        original = np.asarray(Image.open(annotation_of(scene_parsing_dataset, "validation", meta["key"])))
        assert set(np.unique(label)) <= set(np.unique(original)), "nearest neighbour makes no new classes"


def test_limit_takes_the_first_shuffled(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    assert run(scene_parsing_dataset, tmp_path / "all", "--seed", "3") == 0
    assert run(scene_parsing_dataset, tmp_path / "few", "--seed", "3", "--limit", "4") == 0
    info = manifest(tmp_path / "few")
    assert (info["splits"]["training"]["samples"], info["splits"]["validation"]["samples"]) == (4, 3)
    first = [s["__key__"] for s in read_split(tmp_path / "all", "training")][:4]
    assert [s["__key__"] for s in read_split(tmp_path / "few", "training")] == first


def test_same_bytes_whatever_the_worker_count(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    common = ["--root", str(scene_parsing_dataset), "--samples-per-shard", "3", "--short-side", "32"]
    assert main([*common, "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert output_files(tmp_path / "one") == output_files(tmp_path / "two")
    assert run(scene_parsing_dataset, tmp_path / "seeded", "--samples-per-shard", "3", "--seed", "1") == 0
    keys = [[s["__key__"] for s in read_split(tmp_path / out, "training")] for out in ("seeded", "one")]
    assert keys[0] != keys[1]


def test_exif_orientation_applied_to_photo_and_label(tmp_path: Path) -> None:
    dataset = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        (dataset / "images" / split).mkdir(parents=True)
        (dataset / "annotations" / split).mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[:10, :20] = 3  # an asymmetric mark shows any rotation
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    for split, key in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        photo = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        photo.save(dataset / "images" / split / f"{key}.jpg", exif=exif)
        Image.fromarray(labels).save(annotation_of(dataset, split, key))
    assert run(dataset, tmp_path / "out") == 0
    (sample,) = read_split(tmp_path / "out", "training")
    photo, label = image(sample["jpg"]), image(sample["label.png"])
    upright = ImageOps.exif_transpose(Image.open(dataset / "images" / "training" / "ADE_train_00000001.jpg"))
    assert photo.size == label.size == upright.size == (40, 60)
    assert 0x0112 not in photo.getexif(), "no orientation tag left for a decoder to apply twice"
    assert np.abs(np.asarray(photo, dtype=float) - np.asarray(upright, dtype=float)).mean() < 8
    np.testing.assert_array_equal(label, np.asarray(Image.fromarray(labels).transpose(Image.Transpose.ROTATE_270)))


def test_conversions_and_keys(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    """CMYK and PNG-behind-.jpg photos are re-encoded as RGB JPEG; dots leave keys."""
    dataset = shutil.copytree(scene_parsing_dataset, tmp_path / "data")
    photos = dataset / "images" / "training"
    rgb = Image.open(photos / "ADE_train_00000001.jpg").convert("RGB")
    rgb.convert("CMYK").save(photos / "ADE_train_00000001.jpg", "JPEG")
    Image.open(photos / "ADE_train_00000002.jpg").save(photos / "ADE_train_00000002.jpg", "PNG")
    (photos / "ADE_train_00000003.jpg").rename(photos / "ADE_train.v2_00000003.jpg")
    annotation_of(dataset, "training", "ADE_train_00000003").rename(
        annotation_of(dataset, "training", "ADE_train.v2_00000003")
    )
    assert run(dataset, tmp_path / "out", "--splits", "training") == 0
    samples = {s["__key__"]: s for s in read_split(tmp_path / "out", "training")}
    assert len(samples) == 10 and "ADE_train_v2_00000003" in samples
    for key in ("ADE_train_00000001", "ADE_train_00000002"):
        photo = image(samples[key]["jpg"])
        assert (photo.format, photo.mode) == ("JPEG", "RGB")
    cmyk_back = np.asarray(image(samples["ADE_train_00000001"]["jpg"]), dtype=float)
    assert np.abs(cmyk_back - np.asarray(rgb, dtype=float)).mean() < 10


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _resize(path: Path) -> None:
    Image.open(path).resize((20, 20), Image.Resampling.NEAREST).save(path)


def _out_of_range(path: Path) -> None:
    labels = np.asarray(Image.open(path)).copy()
    labels[0, 0] = 200
    Image.fromarray(labels).save(path)


# (file relative to images/training or annotations/training, how to break it, reason in the manifest)
BAD_INPUTS = {
    "truncated": ("images/training/ADE_train_00000001.jpg", _truncate, "truncated or corrupt photo"),
    "empty": ("images/training/ADE_train_00000002.jpg", lambda p: p.write_bytes(b""), "empty photo file"),
    "not-image": ("images/training/ADE_train_00000003.jpg", lambda p: p.write_text("hello"), "not an image"),
    "no-annotation": ("images/training/ADE_train_00000005.jpg", None, "missing annotation"),
    "size": ("annotations/training/ADE_train_00000006.png", _resize, "differs from photo size"),
    "range": ("annotations/training/ADE_train_00000007.png", _out_of_range, "label value 200 > 150"),
}


def _break(dataset: Path, case: str) -> Path:
    relative, damage, _ = BAD_INPUTS[case]
    path = dataset / relative
    if damage is None:
        annotation_of(dataset, "training", path.stem).unlink()
    else:
        damage(path)
    return path


def test_bad_inputs_are_skipped_and_listed(scene_parsing_dataset: Path, tmp_path: Path, capsys) -> None:
    dataset = shutil.copytree(scene_parsing_dataset, tmp_path / "data")
    broken = {case: _break(dataset, case) for case in BAD_INPUTS}
    assert run(dataset, tmp_path / "out", "--samples-per-shard", "1") == 0
    summary = manifest(tmp_path / "out")["splits"]["training"]
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert reasons.keys() == {str(path) for path in broken.values()}
    for case, path in broken.items():
        assert BAD_INPUTS[case][2] in reasons[str(path)]
    assert summary["samples"] == 4 and len(summary["shards"]) == 4, "shards left empty are not written"
    assert sorted(p.name for p in (tmp_path / "out").glob("training-*.tar")) == sorted(summary["shards"])
    assert len(read_split(tmp_path / "out", "training")) == 4
    output = capsys.readouterr()
    assert "written 7, skipped 6" in output.out
    assert output.err.count("cyclegan-shard: skipped ") == 6


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_strict_stops_at_a_bad_input(scene_parsing_dataset: Path, tmp_path: Path, capsys, case: str) -> None:
    dataset = shutil.copytree(scene_parsing_dataset, tmp_path / "data")
    path = _break(dataset, case)
    assert run(dataset, tmp_path / "out", "--strict", "--samples-per-shard", "2") == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("cyclegan-shard: error: ") and BAD_INPUTS[case][2] in line
    assert str(path) in line
    assert not list((tmp_path / "out").glob(".*.tmp")), "no temporary file left behind"


def test_unreadable_seg_png_is_skipped(full_dataset: Path, tmp_path: Path) -> None:
    dataset = shutil.copytree(full_dataset, tmp_path / "data")
    seg = next((dataset / "images" / "ADE" / "training").rglob("*_seg.png"))
    seg.write_bytes(seg.read_bytes()[:100])
    assert run(dataset, tmp_path / "out", "--class-map", str(dataset / CLASS_MAP_FILE)) == 0
    (item,) = manifest(tmp_path / "out")["splits"]["training"]["skipped"]
    assert item["path"] == str(seg) and "annotation" in item["reason"]


def test_resume_after_interruption(scene_parsing_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    args = ("--samples-per-shard", "2")
    assert run(scene_parsing_dataset, tmp_path / "clean", *args) == 0

    encode, calls = shard_writer.encode_sample, []

    def interrupt_inside_third_shard(*a, **k):
        calls.append(1)
        if len(calls) == 6:  # shards of 2: one sample into the third
            raise KeyboardInterrupt
        return encode(*a, **k)

    monkeypatch.setattr(shard_writer, "encode_sample", interrupt_inside_third_shard)
    out = tmp_path / "out"
    assert run(scene_parsing_dataset, out, *args) == 130
    monkeypatch.undo()
    assert sorted(p.name for p in out.glob("*.tar")) == ["training-000000.tar", "training-000001.tar"]
    assert not (out / "manifest.json").exists() and not list(out.glob(".*.tmp"))
    (out / ".training-000002.tar.tmp").write_bytes(b"half a shard from a killed run")
    kept = (out / "training-000000.tar").stat().st_ino

    assert run(scene_parsing_dataset, out, *args) == 0
    assert (out / "training-000000.tar").stat().st_ino == kept, "finished shards are not rewritten"
    assert output_files(out) == output_files(tmp_path / "clean")
    assert run(scene_parsing_dataset, out, *args) == 0, "a finished output re-runs as a no-op"
    assert (out / "training-000000.tar").stat().st_ino == kept


def test_refuses_to_mix_options(scene_parsing_dataset: Path, tmp_path: Path, capsys) -> None:
    assert run(scene_parsing_dataset, tmp_path, "--seed", "0") == 0
    capsys.readouterr()
    assert run(scene_parsing_dataset, tmp_path, "--seed", "1", "--short-side", "32") == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "seed, short_side" in line and "--overwrite" in line
    assert run(scene_parsing_dataset, tmp_path, "--seed", "1", "--overwrite") == 0
    assert manifest(tmp_path)["options"]["seed"] == 1


def assert_indexes_are_wds2idx(out: Path) -> None:
    """Every ``.idx`` in ``out`` is what DALI's ``wds2idx`` writes for its tar."""
    tool = shutil.which("wds2idx") or shutil.which("wds2idx", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("DALI's wds2idx is not installed")
    tars = sorted(out.glob("*.tar"))
    assert tars
    for tar in tars:
        theirs = out / "theirs.idx"
        subprocess.run([tool, str(tar), str(theirs)], check=True, capture_output=True)
        assert tar.with_suffix(".idx").read_text() == theirs.read_text()


def test_index_matches_wds2idx(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    assert run(scene_parsing_dataset, tmp_path, "--samples-per-shard", "4", "--short-side", "32") == 0
    assert_indexes_are_wds2idx(tmp_path)


def test_dali_reads_the_shards(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    dali = pytest.importorskip("nvidia.dali")
    assert run(scene_parsing_dataset, tmp_path, "--samples-per-shard", "4") == 0
    tars = [str(tmp_path / name) for name in manifest(tmp_path)["splits"]["training"]["shards"]]

    @dali.pipeline_def(batch_size=10, num_threads=1, device_id=None)
    def pipeline():
        jpg, label = dali.fn.readers.webdataset(
            paths=tars,
            index_paths=[t.replace(".tar", ".idx") for t in tars],
            ext=["jpg", "label.png"],
            missing_component_behavior="error",
            name="reader",
        )
        return (
            dali.fn.decoders.image(jpg, output_type=dali.types.RGB),
            dali.fn.decoders.image(label, output_type=dali.types.GRAY),
        )

    pipe = pipeline()
    pipe.build()
    assert pipe.epoch_size("reader") == 10
    photos, labels = pipe.run()
    for i in range(10):
        assert photos.at(i).shape[:2] == labels.at(i).shape[:2]


def test_module_cli_one_line_error(scene_parsing_dataset: Path, tmp_path: Path) -> None:
    dataset = shutil.copytree(scene_parsing_dataset, tmp_path / "data")
    path = _break(dataset, "truncated")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "cyclegan.data.shard",
        "--root",
        str(dataset),
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run([*command, "--strict", "--workers", "2"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"cyclegan-shard: error: {path}: truncated or corrupt photo")
    assert not list((tmp_path / "out").glob(".*.tmp")), "stopped workers leave no temporary file"


def _kill_reader(fifo: Path) -> None:
    """SIGKILL the process that opened ``fifo`` for reading, as the OOM killer would."""
    for _ in range(1200):
        try:  # succeeds once a reader has the FIFO open
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            time.sleep(0.05)
    else:
        return
    # The reader's open() returns once the writer is in, but its descriptor may show in /proc a
    # moment later: look until it does, so the reader never sees the writer close (an empty file).
    for _ in range(1200):
        readers = [
            int(link.parts[2])
            for link in Path("/proc").glob("[0-9]*/fd/*")
            if link.parts[2] != str(os.getpid()) and _target(link) == str(fifo)
        ]
        if readers:
            break
        time.sleep(0.05)
    for pid in readers:
        os.kill(pid, signal.SIGKILL)
    os.close(writer)


def _target(link: Path) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None  # the process or descriptor went away


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="finds the worker through /proc")
def test_worker_killed_from_outside_is_an_error_then_resumable(
    scene_parsing_dataset: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    dataset = shutil.copytree(scene_parsing_dataset, tmp_path / "data")
    find_sources = shard_module.find_sources  # from ade20k_releases; patched where the plan looks it up
    blocked: dict[Path, bytes] = {}

    def one_photo_blocks(*args, **kwargs):  # swapped after listing, which takes regular files only
        sources, problems = find_sources(*args, **kwargs)
        photo = sources[0].photo
        blocked[photo] = photo.read_bytes()
        photo.unlink()
        os.mkfifo(photo)
        threading.Thread(target=_kill_reader, args=(photo,), daemon=True).start()
        return sources, problems

    monkeypatch.setattr(shard_module, "find_sources", one_photo_blocks)
    out = tmp_path / "out"
    args = ["--root", str(dataset), "--out", str(out), "--splits", "training", "--samples-per-shard", "1"]
    assert main([*args, "--workers", "2"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"cyclegan-shard: error: {out}: a sharding worker died"), error
    assert "run the same command again" in error
    assert not list(out.glob(".*.tmp"))
    written = {path: path.read_bytes() for path in out.glob("training-*.tar")}

    ((photo, data),) = blocked.items()
    photo.unlink()
    photo.write_bytes(data)
    monkeypatch.setattr(shard_module, "find_sources", find_sources)
    assert main([*args, "--workers", "1"]) == 0
    assert manifest(out)["splits"]["training"]["samples"] == len(find_sources(dataset, "scene-parsing", "training")[0])
    assert all(path.read_bytes() == data for path, data in written.items()), "finished shards are kept as they were"


# ---------------------------------------------------------------- the folders layout


def folders_from(dataset: Path, out: Path, draw: str = "ade150") -> dict[str, Path]:
    """The seed's layout made from a SceneParsing dataset: the same photos, and each annotation
    drawn in the display palette (``draw="ade150"``) or copied as a grey id map (``"ids"``)."""
    made = {}
    for split, (photo_dir, map_dir) in FOLDER_NAMES.items():
        made[photo_dir], made[map_dir] = out / photo_dir, out / map_dir
        shutil.copytree(dataset / "images" / split, made[photo_dir])
        made[map_dir].mkdir(parents=True)
        for annotation in sorted((dataset / "annotations" / split).iterdir()):
            ids = np.asarray(Image.open(annotation))
            drawn = DISPLAY_PALETTE.numpy()[ids] if draw == "ade150" else ids
            Image.fromarray(drawn).save(made[map_dir] / annotation.name)
    return made


def folder_args(made: dict[str, Path], out: Path, *extra: str, val: bool = True) -> list[str]:
    args = ["--photos", str(made["images"]), "--segmentations", str(made["segmented"]), "--out", str(out)]
    if val:
        args += ["--val-photos", str(made["val_images"]), "--val-segmentations", str(made["val_segmented"])]
    return [*args, "--workers", "1", *extra]


def members(out: Path, split: str) -> list[tuple[str, bytes, bytes]]:
    return [(s["__key__"], s["label.png"], s["jpg"]) for s in read_split(out, split)]


@pytest.mark.parametrize("draw", ["ade150", "ids"])
def test_folders_give_the_scene_parsing_shards(scene_parsing_dataset: Path, tmp_path: Path, draw: str, capsys) -> None:
    """Same photos and maps (colour PNGs, or grey id PNGs) in two folders: the same samples in
    the same shards, label and photo bytes identical, as the SceneParsing layout gives."""
    made = folders_from(scene_parsing_dataset, tmp_path / "folders", draw)
    assert main(folder_args(made, tmp_path / "folders_out", "--samples-per-shard", "4")) == 0
    assert f"--palette auto chose {draw} (" in capsys.readouterr().out
    assert run(scene_parsing_dataset, tmp_path / "sp_out", "--samples-per-shard", "4") == 0
    for split in ("training", "validation"):
        assert members(tmp_path / "folders_out", split) == members(tmp_path / "sp_out", split)
    info = manifest(tmp_path / "folders_out")
    assert info["options"]["layout"] == "folders" and info["source"]["palette"] == draw
    assert info["splits"]["training"]["map_pixels"]["snapped"] == 0
    assert info["splits"]["training"]["unpaired"] == []
    meta = json.loads(read_split(tmp_path / "folders_out", "training")[0]["json"])
    assert meta["layout"] == "folders" and meta["photo"].startswith("images/")
    assert meta["annotation"].startswith("segmented/")


@pytest.fixture(scope="module")
def seed_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The synthetic folders layout at 128x160 and the SceneParsing twin holding its true ids."""
    base = tmp_path_factory.mktemp("seed_folders")
    options = {"n_train": 12, "n_val": 2, "size": (128, 160), "seed": 5}
    return make_synthetic_ade20k(base, layout="folders", **options), make_synthetic_ade20k(base, **options)


def test_folders_edge_cases(seed_folders: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    """JPEG and PNG maps, mixed extensions, a missing partner on each side, a foreign palette,
    a grey id map among colour maps and a stray text file: each skip listed with its reason."""
    source, truth = seed_folders
    data = shutil.copytree(source, tmp_path / "data")
    photos, maps = data / "images", data / "segmented"
    stem = "ADE_train_{:08d}".format
    for n in (1, 2):  # JPEG colour maps, quality 90 (the seed's folders may hold such)
        Image.open(maps / f"{stem(n)}.png").save(maps / f"{stem(n)}.jpg", quality=90)
        (maps / f"{stem(n)}.png").unlink()
    Image.open(photos / f"{stem(3)}.jpg").save(photos / f"{stem(3)}.png")  # a PNG photo
    (photos / f"{stem(3)}.jpg").unlink()
    (maps / f"{stem(4)}.png").unlink()  # a photo without a map
    shutil.copy(maps / f"{stem(5)}.png", maps / "extra_map.png")  # a map without a photo
    ids6 = np.asarray(Image.open(truth / "annotations" / "training" / f"{stem(6)}.png"))
    Image.fromarray(TRAIN_PALETTE.numpy()[ids6]).save(maps / f"{stem(6)}.png")  # another palette
    Image.fromarray(ids6).save(maps / f"{stem(7)}.png")  # a grey id map among colour maps
    (photos / "notes.txt").write_text("not an image")

    args = ["--photos", str(photos), "--segmentations", str(maps), "--out", str(tmp_path / "out"), "--workers", "1"]
    assert main([*args, "--val-fraction", "0", "--palette", "ade150"]) == 0
    output = capsys.readouterr()
    summary = manifest(tmp_path / "out")["splits"]["training"]
    reasons = {Path(item["path"]).name: item["reason"] for item in summary["skipped"]}
    assert reasons.keys() == {f"{stem(4)}.jpg", "extra_map.png", f"{stem(6)}.png", f"{stem(7)}.png", "notes.txt"}
    assert reasons[f"{stem(4)}.jpg"] == f"no segmentation map named {stem(4)}.* in {maps}"
    assert reasons["extra_map.png"] == f"no photo named extra_map.* in {photos}"
    assert reasons[f"{stem(6)}.png"].startswith("not a segmentation map in the ade150 palette: ")
    assert reasons[f"{stem(7)}.png"] == "mode L is not a colour map (ade150 palette needs RGB)"
    assert "not an image file type (.txt)" in reasons["notes.txt"]
    assert sorted(Path(p).name for p in summary["unpaired"]) == sorted([f"{stem(4)}.jpg", "extra_map.png"])
    assert "training: written 9 in 1 shards, skipped 5 (2 without a partner); colour maps: " in output.out
    assert "validation" not in manifest(tmp_path / "out")["splits"]

    samples = {s["__key__"]: s for s in read_split(tmp_path / "out", "training")}
    assert set(samples) == {stem(n) for n in (1, 2, 3, 5, 8, 9, 10, 11, 12)}
    for key, sample in samples.items():
        drawn = np.asarray(Image.open(truth / "annotations" / "training" / f"{key}.png"))
        label = np.asarray(image(sample["label.png"]))
        if key in (stem(1), stem(2)):  # JPEG: the stated snapping (README: 99.3 % at 128x160)
            assert (label == drawn).mean() > 0.98
        else:
            np.testing.assert_array_equal(label, drawn)
    pixels = summary["map_pixels"]
    assert pixels["snapped"] > 0 and pixels["unknown"] < 0.001 * pixels["pixels"]


def test_val_fraction_is_seeded_and_the_same_whatever_the_workers(seed_folders, tmp_path: Path) -> None:
    source, _ = seed_folders
    base = ["--photos", str(source / "images"), "--segmentations", str(source / "segmented")]
    base += ["--samples-per-shard", "4"]
    assert main([*base, "--val-fraction", "0.25", "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*base, "--val-fraction", "0.25", "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert output_files(tmp_path / "one") == output_files(tmp_path / "two")
    held_out = {key for key, _, _ in members(tmp_path / "one", "validation")}
    trained = {key for key, _, _ in members(tmp_path / "one", "training")}
    assert len(held_out) == 3 and len(trained) == 9 and not held_out & trained
    assert main([*base, "--val-fraction", "0.25", "--seed", "7", "--out", str(tmp_path / "s7"), "--workers", "1"]) == 0
    assert {key for key, _, _ in members(tmp_path / "s7", "validation")} != held_out
    assert main([*base, "--out", str(tmp_path / "default"), "--workers", "1"]) == 0  # 5 % of 12, at least 1
    assert manifest(tmp_path / "default")["splits"]["validation"]["samples"] == 1


def test_folders_with_full_release_maps(full_dataset: Path, tmp_path: Path, capsys) -> None:
    """The full release's files copied flat, names kept (ADE_train_X.jpg, ADE_train_X_seg.png): the
    error says which --map-suffix pairs them; with it, the samples equal the full layout's."""
    photos, maps = tmp_path / "photos", tmp_path / "maps"
    photos.mkdir(), maps.mkdir()
    for photo in (full_dataset / "images" / "ADE" / "training").rglob("*.jpg"):
        shutil.copy(photo, photos / photo.name)
        shutil.copy(photo.with_name(f"{photo.stem}_seg.png"), maps)
    class_map = str(full_dataset / CLASS_MAP_FILE)
    args = ["--photos", str(photos), "--segmentations", str(maps), "--val-fraction", "0", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "unpaired"), "--class-map", class_map]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cyclegan-shard: error: {photos} and {maps}: no usable training pairs; ")
    assert line.endswith("pairs need the same name before the extension, or pass --map-suffix _seg")
    args += ["--map-suffix", "_seg"]
    assert main([*args, "--out", str(tmp_path / "folders"), "--class-map", class_map]) == 0
    assert "--palette auto chose full" in capsys.readouterr().out
    assert manifest(tmp_path / "folders")["options"]["map_suffix"] == "_seg"
    assert run(full_dataset, tmp_path / "full", "--class-map", class_map, "--splits", "training") == 0
    # the full layout lists photos by scene folder, so the shuffle differs; the samples do not
    assert sorted(members(tmp_path / "folders", "training")) == sorted(members(tmp_path / "full", "training"))


def test_folders_of_subfolders_get_a_hint(seed_folders, tmp_path: Path, capsys) -> None:
    """Pointing the folders layout at ADE20K-style split folders (images/training/...) names them."""
    source, _ = seed_folders
    nested = tmp_path / "nested"
    shutil.copytree(source / "images", nested / "images" / "training")
    shutil.copytree(source / "segmented", nested / "segmented" / "training")
    args = ["--photos", str(nested / "images"), "--segmentations", str(nested / "segmented"), "--out",
            str(tmp_path / "o"), "--workers", "1"]  # fmt: skip
    assert main(args) == 1
    (line,) = capsys.readouterr().err.splitlines()
    images = nested / "images"
    assert line.endswith(f"no usable training pairs; {images} holds no images, only folders (training); the folders "
                         f"layout reads flat folders: name one, e.g. {images / 'training'}")  # fmt: skip


def test_strict_stops_at_an_unpaired_file(seed_folders, tmp_path: Path, capsys) -> None:
    source, _ = seed_folders
    data = shutil.copytree(source, tmp_path / "data")
    (data / "segmented" / "ADE_train_00000004.png").unlink()
    args = ["--photos", str(data / "images"), "--segmentations", str(data / "segmented"), "--out", str(tmp_path / "o")]
    assert main([*args, "--strict"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"cyclegan-shard: error: {data / 'images' / 'ADE_train_00000004.jpg'}: no segmentation map "
                    f"named ADE_train_00000004.* in {data / 'segmented'}")  # fmt: skip


def test_palette_auto_refuses_maps_it_cannot_place(seed_folders, tmp_path: Path, capsys) -> None:
    source, truth = seed_folders
    maps = tmp_path / "maps"
    maps.mkdir()
    for annotation in (truth / "annotations" / "training").iterdir():
        ids = np.asarray(Image.open(annotation))
        Image.fromarray(TRAIN_PALETTE.numpy()[ids]).save(maps / annotation.name)
    args = ["--photos", str(source / "images"), "--segmentations", str(maps), "--out", str(tmp_path / "o")]
    assert main(args) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"cyclegan-shard: error: {maps}: --palette auto: none of 11 sampled maps")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--photos", "{p}"], "needs both --photos DIR and --segmentations DIR"),
        (["--photos", "{p}", "--segmentations", "{s}", "--root", "{p}"], "not --root or --splits"),
        (["--photos", "{p}", "--segmentations", "{s}", "--val-photos", "{p}"], "go together"),
        (["--photos", "{p}", "--segmentations", "{s}", "--val-photos", "{vp}", "--val-segmentations", "{vs}",
          "--val-fraction", "0.1"], "not both"),  # fmt: skip
        (["--photos", "{p}", "--segmentations", "{p}"], "must be different folders"),
        (["--photos", "{p}", "--segmentations", "{s}", "--palette", "full"], "needs --class-map"),
        (["--photos", "{p}", "--segmentations", "{s}", "--val-fraction", "1"], "must be in [0, 1), got 1"),
        (["--photos", "{p}/nowhere", "--segmentations", "{s}"], "nowhere: no such folder"),
        (["--root", "{p}", "--palette", "ade150"], "--palette: for --layout folders or unpaired only"),
        (["--root", "{p}", "--layout", "scene-parsing", "--photos", "{p}"],
         "--photos: for --layout folders or unpaired only"),  # fmt: skip
        (["--root", "{p}", "--map-suffix", "_seg"], "--map-suffix: for --layout folders or unpaired only"),
        (["--layout", "folders"], "needs both --photos DIR"),
        ([], "--root DIR is required"),
    ],
)
def test_folders_usage_errors(seed_folders, tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    source, _ = seed_folders
    names = {"p": "images", "s": "segmented", "vp": "val_images", "vs": "val_segmented"}
    argv = [flag.format(**{k: source / v for k, v in names.items()}) for flag in flags]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_folders_rerun_keeps_shards_and_refuses_other_options(seed_folders, tmp_path: Path, capsys) -> None:
    """The same command again is a resume with nothing left to do; another palette or hold-out is refused."""
    source, _ = seed_folders
    args = ["--photos", str(source / "images"), "--segmentations", str(source / "segmented"), "--out",
            str(tmp_path / "out"), "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    before = output_files(tmp_path / "out")
    assert main(args) == 0 and output_files(tmp_path / "out") == before
    capsys.readouterr()
    assert main([*args, "--val-fraction", "0.5"]) == 1
    assert "holds shards made with different val_fraction" in capsys.readouterr().err
    assert main([*args, "--snap-tolerance", "30"]) == 1
    assert "different snap_tolerance" in capsys.readouterr().err


def test_folders_apply_exif_orientation(tmp_path: Path) -> None:
    photos, maps = tmp_path / "photos", tmp_path / "maps"
    photos.mkdir(), maps.mkdir()
    ids = np.zeros((40, 60), dtype=np.uint8)
    ids[:10, :20] = 3  # an asymmetric mark shows any rotation
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(
        photos / "a.jpg", exif=exif
    )
    Image.fromarray(DISPLAY_PALETTE.numpy()[ids]).save(maps / "a.png")
    args = ["--photos", str(photos), "--segmentations", str(maps), "--val-fraction", "0", "--palette", "ade150"]
    assert main([*args, "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    (sample,) = read_split(tmp_path / "out", "training")
    expected = np.asarray(Image.fromarray(ids).transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(np.asarray(image(sample["label.png"])), expected)
    assert image(sample["jpg"]).size == (40, 60)


# ---------------------------------------------------------------- unpaired data

N_PHOTOS, N_MAPS = 13, 8
PHOTO_SIZE = [48, 40]


@pytest.fixture(scope="module")
def unpaired_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """13 photos (48x40) with 3 paired validation photos and maps, and 8 colour maps of other scenes,
    each of its own size and named map_00.png, ... (no name shared with a photo); ``truth`` holds
    the class ids each map was drawn from, as grey PNGs of the same names. Folder names as
    :func:`folder_args` takes them."""
    base = tmp_path_factory.mktemp("unpaired").resolve()
    photos = make_synthetic_ade20k(base, layout="folders", n_train=N_PHOTOS, n_val=3, size=(40, 48), seed=3)
    made = {name: photos / name for names in FOLDER_NAMES.values() for name in names}
    made["segmented"], made["truth"] = base / "maps", base / "truth"
    shutil.rmtree(photos / "segmented")
    rng = np.random.default_rng(4)
    for folder in (made["segmented"], made["truth"]):
        folder.mkdir()
    for number in range(N_MAPS):
        ids = scene_labels(rng, 30 + 3 * number, 56 - 2 * number)
        Image.fromarray(DISPLAY_COLOURS[ids]).save(made["segmented"] / f"map_{number:02d}.png")
        Image.fromarray(ids).save(made["truth"] / f"map_{number:02d}.png")
    return made


def stream(out: Path, split: str, domain: str) -> dict[str, dict[str, bytes]]:
    """One domain's samples in shard order, read from the tars: key -> extension -> bytes, in
    member order."""
    samples: dict[str, dict[str, bytes]] = {}
    for name in manifest(out)["splits"][split][domain]["shards"]:
        for member, data in tar_members(out / name).items():
            key, ext = member.split(".", 1)
            samples.setdefault(key, {})[ext] = data
    return samples


def shuffled(keys: list[str], seed: str) -> list[str]:
    order = sorted(keys)
    random.Random(seed).shuffle(order)
    return order


def test_unpaired_streams_round_trip(unpaired_data: dict[str, Path], tmp_path: Path, capsys) -> None:
    """Photos and maps each in their own seeded order and shards, two members a sample; the
    validation split paired as in the folders layout; the manifest as the loaders read it."""
    data, out = unpaired_data, tmp_path / "out"
    assert main(folder_args(data, out, "--unpaired", "--samples-per-shard", "4")) == 0
    printed = capsys.readouterr().out
    assert "training photos: written 13 in 4 shards, skipped 0\n" in printed
    assert "training maps: written 8 in 2 shards, skipped 0; colour maps: 0.00% of pixels snapped" in printed
    assert "validation: written 3 in 1 shards, skipped 0; colour maps: " in printed
    assert f"written 24, skipped 0; manifest: {out / 'manifest.json'}" in printed
    dataset = data["images"].parents[1]
    info = manifest(out)
    assert info["format"] == UNPAIRED_FORMAT
    assert info["options"] == {
        "layout": "unpaired", "splits": ["training", "validation"], "class_map_sha256": None, "short_side": None,
        "samples_per_shard": 4, "limit": None, "seed": 0, "palette": "ade150", "snap_tolerance": DEFAULT_TOLERANCE,
        "max_unknown": DEFAULT_MAX_UNKNOWN, "map_suffix": "",
    }  # fmt: skip
    assert info["source"] == {
        "dataset": str(dataset), "layout": "unpaired", "photos": str(data["images"]),
        "segmentations": str(data["segmented"]), "palette": "ade150", "val_photos": str(data["val_images"]),
        "val_segmentations": str(data["val_segmented"]), "duplicate_colours": describe_duplicates(),
    }  # fmt: skip
    photos, maps = info["splits"]["training"]["photos"], info["splits"]["training"]["maps"]
    assert info["splits"]["training"].keys() == {"photos", "maps"}
    assert photos == {"shards": [f"training-photos-{i:06d}.tar" for i in range(4)], "shard_samples": [4, 4, 4, 1],
                      "samples": 13, "skipped": []}  # fmt: skip
    assert list(maps) == ["shards", "shard_samples", "samples", "class_pixels", "skipped", "map_pixels"]
    assert (maps["shards"], maps["shard_samples"], maps["samples"], maps["skipped"]) == (
        ["training-maps-000000.tar", "training-maps-000001.tar"], [4, 4], 8, [])
    assert maps["map_pixels"]["unknown"] == maps["map_pixels"]["snapped"] == 0
    validation = info["splits"]["validation"]
    assert list(validation) == ["shards", "shard_samples", "samples", "class_pixels", "skipped", "map_pixels",
                                "unpaired"]  # fmt: skip
    assert (validation["samples"], validation["unpaired"]) == (3, [])
    shards = [name for entry in (photos, maps, validation) for name in entry["shards"]]
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(shards)
    assert sorted(p.name for p in out.glob("*.idx")) == sorted(name.replace(".tar", ".idx") for name in shards)

    samples = stream(out, "training", "photos")
    assert list(samples) == shuffled([p.stem for p in data["images"].iterdir()], "training-photos:0")
    for key, parts in samples.items():
        source = data["images"] / f"{key}.jpg"
        assert list(parts) == ["jpg", "json"] and parts["jpg"] == source.read_bytes()
        assert json.loads(parts["json"]) == {
            "key": key, "split": "training", "layout": "unpaired", "domain": "photos",
            "photo": source.relative_to(dataset).as_posix(), "original_size": PHOTO_SIZE, "size": PHOTO_SIZE,
            "scene": None,
        }  # fmt: skip
    samples = stream(out, "training", "maps")
    assert list(samples) == shuffled([p.stem for p in data["segmented"].iterdir()], "training-maps:0")
    pixels = np.zeros(151, dtype=np.int64)
    for key, parts in samples.items():
        assert list(parts) == ["label.png", "json"]
        label, truth = image(parts["label.png"]), np.asarray(Image.open(data["truth"] / f"{key}.png"))
        assert label.mode == "L"
        np.testing.assert_array_equal(np.asarray(label), truth)
        assert json.loads(parts["json"]) == {
            "key": key, "split": "training", "layout": "unpaired", "domain": "maps",
            "annotation": f"maps/{key}.png", "original_size": list(label.size), "size": list(label.size),
        }  # fmt: skip
        pixels += np.bincount(truth.ravel(), minlength=151)
    assert len({json.loads(parts["json"])["size"][1] for parts in samples.values()}) == N_MAPS, "maps of any size"
    assert maps["class_pixels"] == pixels.tolist()
    for sample in read_split(out, "validation"):
        assert json.loads(sample["json"])["layout"] == "unpaired"
        assert image(sample["jpg"]).size == image(sample["label.png"]).size
    for tar in out.glob("*.tar"):
        assert (out / tar.name).with_suffix(".idx").read_text() == index_from_tar(tar)


def test_unpaired_indexes_match_wds2idx(unpaired_data: dict[str, Path], tmp_path: Path) -> None:
    assert main(folder_args(unpaired_data, tmp_path, "--unpaired", "--samples-per-shard", "3")) == 0
    assert_indexes_are_wds2idx(tmp_path)


def test_unpaired_same_bytes_whatever_the_workers(unpaired_data: dict[str, Path], tmp_path: Path) -> None:
    """Also: --short-side scales each photo (re-encoded) and each map (nearest) on its own."""
    args = ("--unpaired", "--samples-per-shard", "3", "--short-side", "24")
    assert main(folder_args(unpaired_data, tmp_path / "one", *args)) == 0
    assert main(folder_args(unpaired_data, tmp_path / "two", *args, "--workers", "2")) == 0
    assert output_files(tmp_path / "one") == output_files(tmp_path / "two")
    for key, parts in stream(tmp_path / "one", "training", "photos").items():
        meta, photo = json.loads(parts["json"]), image(parts["jpg"])
        assert (photo.format, photo.size, meta["size"], meta["original_size"]) == ("JPEG", (29, 24), [29, 24],
                                                                                    PHOTO_SIZE), key  # fmt: skip
    for key, parts in stream(tmp_path / "one", "training", "maps").items():
        meta, label = json.loads(parts["json"]), image(parts["label.png"])
        truth = Image.open(unpaired_data["truth"] / f"{key}.png")
        assert min(label.size) == 24 and list(label.size) == meta["size"]
        assert meta["original_size"] == list(truth.size) != meta["size"]
        assert set(np.unique(label)) <= set(np.unique(truth)), "nearest neighbour makes no new classes"


def test_unpaired_resume_after_interruption(unpaired_data: dict[str, Path], tmp_path: Path, monkeypatch,
                                            capsys) -> None:  # fmt: skip
    args = ("--unpaired", "--samples-per-shard", "2")
    assert main(folder_args(unpaired_data, tmp_path / "clean", *args)) == 0
    encode, calls = shard_writer.encode_map, []

    def interrupt_inside_second_map_shard(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(*a, **k)

    monkeypatch.setattr(shard_writer, "encode_map", interrupt_inside_second_map_shard)
    out = tmp_path / "out"
    assert main(folder_args(unpaired_data, out, *args)) == 130
    monkeypatch.undo()
    written = sorted(p.name for p in out.glob("*.tar"))
    assert written == ["training-maps-000000.tar", *(f"training-photos-{i:06d}.tar" for i in range(7))]
    assert not (out / "manifest.json").exists() and not list(out.glob(".*.tmp"))
    kept = (out / "training-maps-000000.tar").stat().st_ino
    assert main(folder_args(unpaired_data, out, *args)) == 0
    assert (out / "training-maps-000000.tar").stat().st_ino == kept, "finished shards are not rewritten"
    assert output_files(out) == output_files(tmp_path / "clean")
    capsys.readouterr()
    assert main(folder_args(unpaired_data, out, *args, "--seed", "1")) == 1
    assert "holds shards made with different seed; pass --overwrite" in capsys.readouterr().err
    paired = ["--photos", str(unpaired_data["val_images"]), "--segmentations", str(unpaired_data["val_segmented"]),
              "--val-fraction", "0", "--out", str(out), "--workers", "1"]  # fmt: skip
    assert main(paired) == 1, "a paired run into unpaired shards is refused too"
    assert main([*paired, "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.tar")) == ["training-000000.tar"], "--overwrite removed both domains"
    assert manifest(out)["format"] == PAIRED_FORMAT


def test_unpaired_limit_applies_per_stream(unpaired_data: dict[str, Path], tmp_path: Path) -> None:
    assert main(folder_args(unpaired_data, tmp_path / "all", "--unpaired", val=False)) == 0
    for limit, counts in ((5, (5, 5)), (10, (10, 8))):
        out = tmp_path / str(limit)
        assert main(folder_args(unpaired_data, out, "--unpaired", "--limit", str(limit), val=False)) == 0
        training = manifest(out)["splits"]["training"]
        assert (training["photos"]["samples"], training["maps"]["samples"]) == counts
        for domain in ("photos", "maps"):
            assert list(stream(out, "training", domain)) == list(stream(tmp_path / "all", "training", domain))[:limit]


def test_unpaired_bad_inputs_are_skipped_per_stream(unpaired_data: dict[str, Path], tmp_path: Path, capsys) -> None:
    """Each domain lists its own skips: corrupt and empty files, other file types, a stem naming two
    files, a key another file has, a map in no palette. A key may be in both domains."""
    photos = shutil.copytree(unpaired_data["images"], tmp_path / "photos")
    maps = shutil.copytree(unpaired_data["segmented"], tmp_path / "maps")
    first, second, third = sorted(photos.iterdir())[:3]
    _truncate(first)
    (photos / "notes.txt").write_text("not an image")
    shutil.copy(second, photos / second.name.replace("ADE_", "ADE."))  # the same key, listed first
    shutil.copy(third, photos / "map_01.jpg")  # a key the maps have too
    (maps / "map_02.png").write_bytes(b"")
    shutil.copy(maps / "map_03.png", maps / "map_03.jpg")
    noise = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(noise).save(maps / "noise.png")
    args = ["--photos", str(photos), "--segmentations", str(maps), "--unpaired", "--palette", "ade150",
            "--samples-per-shard", "20", "--workers", "1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    output = capsys.readouterr()
    training = manifest(tmp_path / "out")["splits"]["training"]
    reasons = {domain: {Path(s["path"]).name: s["reason"] for s in training[domain]["skipped"]} for domain in DOMAINS}
    assert reasons["photos"].keys() == {first.name, "notes.txt", second.name}
    assert reasons["photos"][first.name].startswith("truncated or corrupt photo")
    assert reasons["photos"]["notes.txt"] == "not an image file type (.txt)"
    assert reasons["photos"][second.name] == f"duplicate key {second.stem} (also {photos / ('ADE.' + second.name[4:])})"
    assert reasons["maps"].keys() == {"map_02.png", "map_03.png", "map_03.jpg", "noise.png"}
    assert reasons["maps"]["map_02.png"] == "empty segmentation map file (0 bytes)"
    assert reasons["maps"]["map_03.jpg"] == "2 segmentation maps share the stem map_03 (map_03.jpg, map_03.png)"
    assert reasons["maps"]["noise.png"].startswith("not a segmentation map in the ade150 palette")
    assert "map_01" in stream(tmp_path / "out", "training", "photos")
    assert "map_01" in stream(tmp_path / "out", "training", "maps")
    assert "training photos: written 13 in 1 shards, skipped 3\n" in output.out
    assert "training maps: written 6 in 1 shards, skipped 4; colour maps: " in output.out
    assert "written 19, skipped 7;" in output.out
    assert output.err.count("cyclegan-shard: skipped ") == 7

    assert main([*args, "--out", str(tmp_path / "strict"), "--strict"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"cyclegan-shard: error: {photos / 'notes.txt'}: not an image file type (.txt)"
    maps = shutil.copytree(unpaired_data["segmented"], tmp_path / "maps2")
    (maps / "map_05.png").write_bytes(b"")
    strict = ["--photos", str(unpaired_data["images"]), "--segmentations", str(maps), "--unpaired", "--strict"]
    assert main([*strict, "--out", str(tmp_path / "strict2"), "--workers", "1"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"cyclegan-shard: error: {maps / 'map_05.png'}: empty segmentation map file (0 bytes)"


def test_cyclegan_folders_are_detected(unpaired_data: dict[str, Path], tmp_path: Path, capsys) -> None:
    """A --root holding trainA/ (photos) and trainB/ (maps) is unpaired; testA/ testB/ pair for validation."""
    root = tmp_path / "mydataset"
    for name, made in (("trainA", "images"), ("trainB", "segmented"), ("testA", "val_images"),
                       ("testB", "val_segmented")):  # fmt: skip
        shutil.copytree(unpaired_data[made], root / name)
    assert main(["--root", str(root), "--out", str(tmp_path / "root"), "--workers", "1"]) == 0
    assert (f"cyclegan-shard: unpaired layout, photos (A) {root / 'trainA'}, maps (B) {root / 'trainB'}; validation "
            f"pairs {root / 'testA'} + {root / 'testB'}\n") in capsys.readouterr().out  # fmt: skip
    explicit = ["--photos", str(root / "trainA"), "--segmentations", str(root / "trainB"), "--unpaired", "--val-photos",
                str(root / "testA"), "--val-segmentations", str(root / "testB")]  # fmt: skip
    assert main([*explicit, "--out", str(tmp_path / "flags"), "--workers", "1"]) == 0
    assert output_files(tmp_path / "root") == output_files(tmp_path / "flags")
    info = manifest(tmp_path / "root")
    assert (info["source"]["dataset"], info["source"]["val_segmentations"]) == (str(root), str(root / "testB"))
    assert info["splits"]["validation"]["samples"] == 3

    shutil.rmtree(root / "testB")
    assert main(["--root", str(root), "--out", str(tmp_path / "x"), "--workers", "1"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"cyclegan-shard: error: {root / 'testA'}: no testB/ beside it; validation pairs testA/ photos "
                    "with testB/ maps by name")  # fmt: skip
    shutil.rmtree(root / "testA")
    assert main(["--root", str(root), "--layout", "unpaired", "--out", str(tmp_path / "none"), "--workers", "1"]) == 0
    assert "; no validation split\n" in capsys.readouterr().out
    assert manifest(tmp_path / "none")["options"]["splits"] == ["training"]
    assert list(manifest(tmp_path / "none")["splits"]) == ["training"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--unpaired", "--photos", "{p}", "--segmentations", "{s}", "--val-fraction", "0.1"],
         "--val-fraction: unpaired photos and maps have no pairs to hold out"),
        (["--unpaired", "--photos", "{p}"], "the unpaired layout needs both --photos DIR and --segmentations DIR"),
        (["--unpaired", "--layout", "folders", "--photos", "{p}", "--segmentations", "{s}"],
         "--unpaired is --layout unpaired, not --layout folders"),
        (["--unpaired", "--photos", "{p}", "--segmentations", "{p}"], "must be different folders"),
        (["--unpaired", "--photos", "{p}", "--segmentations", "{s}", "--val-photos", "{vp}"], "go together"),
        (["--unpaired", "--photos", "{p}", "--segmentations", "{s}", "--splits", "training"],
         "--splits: for the ADE20K layouts only"),
        (["--unpaired", "--photos", "{p}", "--segmentations", "{s}", "--palette", "full"], "needs --class-map"),
        (["--unpaired", "--root", "{p}", "--segmentations", "{s}"],
         "give --root (trainA/, trainB/, testA/, testB/) or --segmentations, not both"),
        (["--layout", "unpaired", "--root", "{p}/nowhere"], "nowhere: no such folder"),
        (["--layout", "unpaired"], "the unpaired layout needs both --photos DIR"),
    ],
)  # fmt: skip
def test_unpaired_usage_errors(unpaired_data: dict[str, Path], tmp_path: Path, capsys, flags: list[str],
                               message: str) -> None:  # fmt: skip
    names = {"p": "images", "s": "segmented", "vp": "val_images"}
    argv = [flag.format(**{k: unpaired_data[v] for k, v in names.items()}) for flag in flags]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cyclegan-shard: error: ")]
    assert message in line


def test_unpaired_dataset_errors_name_the_folder(unpaired_data: dict[str, Path], tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--photos", str(unpaired_data["images"]), "--segmentations", str(empty), "--unpaired", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"cyclegan-shard: error: no maps to shard: {empty} holds no images"]
    assert main(["--root", str(unpaired_data["images"]), "--layout", "unpaired", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.splitlines() == [f"cyclegan-shard: error: {unpaired_data['images']}: no trainA/ "
                                                    "and trainB/ folders (photos and segmentation maps)"]  # fmt: skip


# ---------------------------------------------------------------- paired output, pinned by a fixture

PAIRED_FIXTURE = REPO / "tests" / "fixtures" / "paired_shards.json"
RECORD = "CYCLEGAN_RECORD_PAIRED_SHARDS"
"""With this set to 1, ``test_paired_output_unchanged`` adds the running encoder flavour to the fixture."""
TMP = "<tmp>"


def encoder_flavour() -> str:
    """Which bytes this Pillow's encoders write, as a hash of one image saved the ways the sharder and
    the synthetic data save: Pillow wheels bundle their own libjpeg and zlib, so re-encoded photos and
    every PNG differ between versions, while what the sharder decides does not."""
    ramp = np.add.outer(np.arange(24), 5 * np.arange(40)).astype(np.uint8)
    probe = Image.fromarray(np.stack([ramp, ramp[::-1], 255 - ramp], axis=-1))
    digest = hashlib.sha256()
    for picture, params in [(probe, {"quality": 90}), (probe, {"quality": 95}), (probe.convert("L"), {"quality": 90})]:
        digest.update(encoded(picture, "JPEG", **params))
    for picture in (probe, probe.convert("L")):
        digest.update(encoded(picture, "PNG"))
    return digest.hexdigest()[:16]


def encoded(picture: Image.Image, fmt: str, **params: int) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **params)
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def paired_inputs(base: Path) -> dict[str, tuple[Path, list[str]]]:
    """Small inputs of each paired layout with the conversions and bad inputs the sharder handles,
    and the arguments each is sharded with: case -> (dataset folder, argv without --out)."""
    options = {"n_train": 7, "n_val": 2, "size": (32, 48), "size_jitter": 0.3, "grayscale_every": 3, "seed": 21}
    scene = make_synthetic_ade20k(base / "sp", **options)
    photos = scene / "images" / "training"
    (photos / "ADE_train_00000002.jpg").write_text("not a photo")
    annotation_of(scene, "training", "ADE_train_00000005").unlink()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(photos / "ADE_train_00000004.jpg").save(photos / "ADE_train_00000004.jpg", exif=exif, quality=90)
    full = make_synthetic_ade20k(base / "full", layout="full", **options)
    folders = make_synthetic_ade20k(base / "folders", layout="folders", **options)
    (folders / "segmented" / "ADE_train_00000006.png").unlink()
    (folders / "images" / "notes.txt").write_text("not an image")
    return {
        "scene-parsing": (scene, ["--root", str(scene), "--samples-per-shard", "3"]),
        "full": (full, ["--root", str(full), "--class-map", str(full / CLASS_MAP_FILE), "--short-side", "40",
                        "--limit", "5", "--samples-per-shard", "2"]),  # fmt: skip
        "folders": (folders, ["--photos", str(folders / "images"), "--segmentations", str(folders / "segmented"),
                              "--val-fraction", "0.3", "--samples-per-shard", "4"]),  # fmt: skip
    }


def tar_members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tar:
        return {info.name: tar.extractfile(info).read() for info in tar.getmembers()}


def index_from_tar(tar_path: Path) -> str:
    """The index of a tar as wds2idx writes it, from the tar's own member offsets: one line per
    sample (consecutive members of one key), each member as ``ext data_offset size name``."""
    lines: list[list[str]] = []
    keys: list[str] = []
    with tarfile.open(tar_path) as tar:
        for info in tar.getmembers():
            key, ext = info.name.split(".", 1)
            if keys[-1:] != [key]:
                keys.append(key)
                lines.append([])
            lines[-1].append(f"{ext} {info.offset_data} {info.size} {info.name}")
    return f"v1.2 {len(lines)}\n" + "".join(" ".join(line) + "\n" for line in lines)


def describe_output(out: Path, dataset: Path, tmp: Path) -> tuple[dict, dict[str, str]]:
    """An output in two parts: what no encoder changes (its file names, every json file with ``tmp``
    as a placeholder, as content and as text, each tar's members in order: a json's text, a label's
    decoded pixels, whether a photo is its source's own bytes), and the sha256 of each tar and index."""
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    described: dict = {"files": files, "json": {}, "json_text_sha256": {}, "tars": {}}
    for name in files:
        if name.endswith(".json"):
            text = (out / name).read_text().replace(str(tmp), TMP)
            described["json"][name], described["json_text_sha256"][name] = json.loads(text), sha256(text.encode())
        elif name.endswith(".tar"):
            assert (out / name).with_suffix(".idx").read_text() == index_from_tar(out / name)
            members = tar_members(out / name)
            described["tars"][name] = [[member, _decoded(member, data, members, dataset)]
                                       for member, data in members.items()]  # fmt: skip
    return described, {name: sha256((out / name).read_bytes()) for name in files if name.endswith((".tar", ".idx"))}


def _decoded(name: str, data: bytes, members: dict[str, bytes], dataset: Path) -> str:
    key, ext = name.split(".", 1)
    if ext == "json":
        return data.decode()
    picture = image(data)
    if ext == "label.png":
        return f"{picture.mode} {picture.size} pixels {sha256(np.asarray(picture).tobytes())}"
    if data == (dataset / json.loads(members[f"{key}.json"])["photo"]).read_bytes():
        return "the source's bytes"
    return f"re-encoded {picture.format} {picture.mode} {picture.size}"


def test_paired_output_unchanged(tmp_path: Path) -> None:
    """Paired shards, indexes and manifests stay what the sharder wrote before unpaired data came
    (git 85ad564): their content everywhere, their bytes under each encoder flavour recorded.
    To record the running flavour: CYCLEGAN_RECORD_PAIRED_SHARDS=1 pytest -k paired_output_unchanged."""
    recorded = json.loads(PAIRED_FIXTURE.read_text()) if PAIRED_FIXTURE.is_file() else {"cases": {}, "flavours": {}}
    found, hashes = {}, {}
    for case, (dataset, argv) in paired_inputs(tmp_path / "inputs").items():
        assert main([*argv, "--out", str(tmp_path / case), "--workers", "1"]) == 0
        found[case], hashes[case] = describe_output(tmp_path / case, dataset, tmp_path.resolve())
    flavour = encoder_flavour()
    if os.environ.get(RECORD) == "1":
        assert recorded["cases"] in ({}, found), f"delete {PAIRED_FIXTURE} to record another output"
        entry = recorded["flavours"].setdefault(flavour, {"pillow": [], "sha256": hashes})
        assert entry["sha256"] == hashes, f"flavour {flavour} wrote other bytes before: a probe too weak"
        recorded["cases"], entry["pillow"] = found, sorted({*entry["pillow"], PIL.__version__})
        PAIRED_FIXTURE.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    assert found.keys() == recorded["cases"].keys()
    for case, described in found.items():
        assert described == recorded["cases"][case], case
    if flavour in recorded["flavours"]:
        assert hashes == recorded["flavours"][flavour]["sha256"]
