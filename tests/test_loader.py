"""The two loaders (DALI in CPU mode, torchvision fallback) over real cyclegan-shard output."""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cyclegan.config import DataConfig
from cyclegan.data.catalog import CorruptSampleError, LoaderError, read_data, read_split
from cyclegan.data.loader import build_loader, choose_loader
from cyclegan.data.shard import _add_member
from cyclegan.data.shard import main as shard_main
from cyclegan.palette import ids_to_seg

LOADERS = ["dali", "torch"]
JPEG_TOLERANCE = 2 / 127.5
"""Photos from DALI's and torchvision's JPEG decoders may differ by up to 2 levels of 255
(both use libjpeg-turbo on the CPU: measured identical here; nvJPEG can round differently)."""
H, W = 40, 48


def _shard(dataset: Path, out: Path, *extra: str) -> Path:
    code = shard_main(["--root", str(dataset), "--out", str(out), "--samples-per-shard", "4", "--workers", "1", *extra])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def shards(scene_parsing_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 training samples in 3 shards, every photo 40 px on the short side (no resampling at load_size 40)."""
    return _shard(scene_parsing_dataset, tmp_path_factory.mktemp("shards"), "--short-side", "40")


@pytest.fixture(scope="module")
def position_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos and labels whose content says where each pixel was: R = 5x, G = 6y;
    label = 1 + x // 4 + 12 * (y // 8)."""
    root = tmp_path_factory.mktemp("position") / "ADEChallengeData2016"
    y, x = np.mgrid[0:H, 0:W]
    photo = np.stack([5 * x, 6 * y, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    label = (1 + x // 4 + 12 * (y // 8)).astype(np.uint8)
    for split, count in (("training", 8), ("validation", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(count):
            name = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(photo).save(root / "images" / split / f"{name}.jpg", quality=98)
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
    return _shard(root, tmp_path_factory.mktemp("position_shards"))


def _cfg(shards: Path, loader: str, **changes: object) -> DataConfig:
    base = DataConfig(shards=str(shards), loader=loader, load_size=40, crop_size=32, batch_size=2, num_workers=1)
    return dataclasses.replace(base, **changes)


def _load(cfg: DataConfig, train: bool = True, rank: int = 0, world_size: int = 1, seed: int = 0):
    return build_loader(cfg, split="training", rank=rank, world_size=world_size, device="cpu", seed=seed, train=train)


def _keys(loader, epoch: int = 0) -> list[str]:
    return [key for batch in loader.epoch(epoch) for key in batch["key"]]


def test_loaders_agree_without_augmentation(shards: Path) -> None:
    dali = list(_load(_cfg(shards, "dali"), train=False).epoch(0))
    fallback = list(_load(_cfg(shards, "torch"), train=False).epoch(0))
    assert len(dali) == len(fallback) == 5
    for a, b in zip(dali, fallback, strict=True):
        assert a["key"] == b["key"] == a["seg_key"] == b["seg_key"]
        assert a["photo"].shape == b["photo"].shape == (2, 3, 32, 32)
        assert a["photo"].dtype == b["photo"].dtype == torch.float32
        assert torch.allclose(a["photo"], b["photo"], atol=JPEG_TOLERANCE)
        assert a["label"].dtype == b["label"].dtype == torch.int64
        assert torch.equal(a["label"], b["label"])
        assert torch.equal(a["seg"], b["seg"])
        assert torch.equal(b["seg"], ids_to_seg(b["label"]))
        assert a["photo"].min() >= -1 and a["photo"].max() <= 1


@pytest.mark.parametrize("loader", LOADERS)
def test_batch_contract_after_resize(shards: Path, loader: str) -> None:
    batch = next(iter(_load(_cfg(shards, loader, load_size=36, crop_size=32)).epoch(0)))
    assert batch["photo"].shape == batch["seg"].shape == (2, 3, 32, 32)
    assert batch["label"].shape == (2, 32, 32)
    assert int(batch["label"].max()) <= 150
    assert torch.equal(batch["seg"], ids_to_seg(batch["label"]))


@pytest.mark.parametrize("loader", LOADERS)
def test_classes_mode_batches_skip_the_colouring(shards: Path, loader: str) -> None:
    """coloured=False (model.seg_mode classes): the same photos and labels, in the same order, and no
    ``seg``; the step makes one-hot maps from ``label`` on the device."""
    cfg = _cfg(shards, loader, load_size=36, crop_size=32)
    plain = build_loader(cfg, split="training", rank=0, world_size=1, device="cpu", seed=0, train=True, coloured=False)
    coloured = list(_load(cfg).epoch(0))
    batches = list(plain.epoch(0))
    assert len(batches) == len(coloured) == 5
    for a, b in zip(batches, coloured, strict=True):
        assert "seg" not in a and set(a) == {"photo", "label", "key", "seg_key"}
        assert a["key"] == b["key"] and a["seg_key"] == b["seg_key"]
        assert torch.equal(a["label"], b["label"]) and a["label"].dtype == torch.int64
        assert torch.equal(a["photo"], b["photo"])


def _positions(batch: dict, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column: x read from the photo, x-bin read from the label; per row: y and y-bin."""
    photo = (batch["photo"][i].numpy() + 1) * 127.5
    label = batch["label"][i].numpy() - 1
    return photo[0].mean(0) / 5, np.median(label % 12, axis=0), photo[1].mean(1) / 6, np.median(label // 12, axis=1)


@pytest.mark.parametrize("loader", LOADERS)
def test_paired_crop_and_flip_are_shared(position_shards: Path, loader: str) -> None:
    flips = 0
    for epoch in range(3):
        for batch in _load(_cfg(position_shards, loader, paired=True)).epoch(epoch):
            assert batch["key"] == batch["seg_key"]
            for i in range(len(batch["key"])):
                x, x_bin, y, y_bin = _positions(batch, i)
                assert np.all(np.abs(x - (4 * x_bin + 1.5)) <= 2.5), (x, x_bin)
                assert np.all(np.abs(y - (8 * y_bin + 3.5)) <= 4.5), (y, y_bin)
                flips += bool(x[0] > x[-1])
    assert 0 < flips < 24  # flips happen, not always


@pytest.mark.parametrize("loader", LOADERS)
def test_unpaired_streams_are_independent(shards: Path, loader: str) -> None:
    batches = list(_load(_cfg(shards, loader, paired=False)).epoch(0))
    keys = [k for b in batches for k in b["key"]]
    seg_keys = [k for b in batches for k in b["seg_key"]]
    assert sorted(keys) == sorted(seg_keys)  # the same samples, in another order
    assert keys != seg_keys
    for batch in batches:  # the label belongs to the seg stream
        assert torch.equal(batch["seg"], ids_to_seg(batch["label"]))


@pytest.mark.parametrize("loader", LOADERS)
def test_ranks_take_disjoint_blocks_that_cover_the_split(shards: Path, loader: str) -> None:
    every = {s.key for s in read_split(shards, "training").samples}
    cfg = _cfg(shards, loader, batch_size=1)
    per_rank = [set(_keys(_load(cfg, rank=r, world_size=2))) for r in range(2)]
    assert per_rank[0].isdisjoint(per_rank[1])
    assert per_rank[0] | per_rank[1] == every
    # Batch 2: every rank runs min(10 // 2, ...) // 2 = 2 batches; one sample of each block sits out.
    loaders = [_load(_cfg(shards, loader), rank=r, world_size=2) for r in range(2)]
    assert [ld.batches_per_epoch for ld in loaders] == [2, 2]
    firsts = [set(_keys(ld)) for ld in loaders]
    assert all(len(keys) == 4 for keys in firsts) and firsts[0].isdisjoint(firsts[1])
    assert all(keys <= block for keys, block in zip(firsts, per_rank, strict=True))


@pytest.mark.parametrize("loader", LOADERS)
def test_epoch_order_changes_and_repeats_with_the_seed(shards: Path, loader: str) -> None:
    cfg = _cfg(shards, loader)
    first = _load(cfg)
    assert _keys(first, 0) != _keys(first, 1)
    assert _keys(_load(cfg), 1) == _keys(first, 1)
    assert _keys(_load(cfg, seed=1), 0) != _keys(first, 0)


@pytest.mark.parametrize("loader", LOADERS)
def test_skip_batches_resumes_the_same_epoch(shards: Path, loader: str) -> None:
    loader_ = _load(_cfg(shards, loader))
    full = list(loader_.epoch(3))
    resumed = list(loader_.epoch(3, skip_batches=2))
    assert [b["key"] for b in resumed] == [b["key"] for b in full[2:]]
    assert all(torch.equal(a["photo"], b["photo"]) for a, b in zip(resumed, full[2:], strict=True))


@pytest.mark.parametrize("loader", LOADERS)
def test_sample_size_caps_the_epoch(shards: Path, loader: str) -> None:
    loader_ = _load(_cfg(shards, loader, sample_size=4))
    assert loader_.batches_per_epoch == 2
    assert len(_keys(loader_)) == 4


def _corrupt_copy(shards: Path, tmp_path: Path) -> tuple[Path, str, str]:
    copy = shutil.copytree(shards, tmp_path / "shards")
    sample = read_split(copy, "training").samples[5]
    offset, size = sample.parts["jpg"]
    with open(sample.shard, "r+b") as f:  # keep the JPEG's header, zero the scan data
        f.seek(offset + 200)
        f.write(b"\0" * (size - 200))
    return copy, sample.shard.name, sample.key


@pytest.mark.parametrize("loader", LOADERS)
def test_corrupt_jpeg_names_shard_and_key(shards: Path, tmp_path: Path, loader: str) -> None:
    copy, shard_name, key = _corrupt_copy(shards, tmp_path)
    with pytest.raises(CorruptSampleError) as error:
        for _ in _load(_cfg(copy, loader), train=False).epoch(0):
            pass
    message = str(error.value)
    assert shard_name in message and key in message and ".jpg" in message
    assert "\n" not in message


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")
def test_device_decode_path_errors_and_early_stops_end_its_thread(shards: Path, tmp_path: Path) -> None:
    """The in-process decode runs in a prefetch thread: its errors reach the caller as the same one
    line, and leaving an epoch early stops the thread instead of leaving it blocked."""
    copy, shard_name, key = _corrupt_copy(shards, tmp_path)
    device_path = _load(_cfg(copy, "torch"), train=False)
    device_path.gpu_decode = True  # what a CUDA device sets
    with pytest.raises(CorruptSampleError) as error:
        for _ in device_path.epoch(0):
            pass
    assert shard_name in str(error.value) and key in str(error.value) and "\n" not in str(error.value)
    del error, device_path  # the traceback holds the abandoned epoch: end its worker now, not at a later test's GC
    gc.collect()
    good = _load(_cfg(shards, "torch"))
    good.gpu_decode = True
    epoch = good.epoch(0)
    first = next(epoch)
    assert first["photo"].shape == (2, 3, 32, 32)
    epoch.close()  # what the trainer's loop does when it stops mid-epoch
    assert not [t for t in threading.enumerate() if t.name == "cyclegan-prefetch"]
    assert len(list(good.epoch(1))) == good.batches_per_epoch  # the loader still works afterwards


def _worker_script(shards: Path, name: str, then: str) -> tuple[Path, dict[str, str]]:
    """A script that takes one batch from a 2-worker torch loader, then runs ``then``; and its environment."""
    code = (
        "import multiprocessing, time\n"
        "from cyclegan.config import DataConfig\n"
        "from cyclegan.data.loader import build_loader\n"
        "if __name__ == '__main__':\n"
        f"    cfg = DataConfig(shards={str(shards)!r}, loader='torch', load_size=40, crop_size=32, batch_size=2,"
        " num_workers=2)\n"
        "    batches = build_loader(cfg, split='training', rank=0, world_size=1, device='cpu', seed=0,"
        " train=True).epoch(0)\n"
        "    next(batches)\n"
        f"    {then}\n"
    )
    script = shards.parent / f"{name}.py"
    script.write_text(code)
    return script, {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


@pytest.mark.slow
def test_a_process_with_live_loader_workers_still_exits(shards: Path) -> None:
    """The workers ignore SIGTERM, which is how multiprocessing ends daemonic children at exit; a loader
    still holding its persistent workers then must not keep the process from exiting."""
    script, env = _worker_script(shards, "live_workers", "print('one batch', flush=True)")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "one batch" in proc.stdout, proc.stderr[-2000:]


def test_evaluation_workers_end_with_each_pass_training_workers_stay(shards: Path) -> None:
    """A training loader keeps its workers between epochs (no restart cost each epoch); an evaluation
    loader, used once every ``train.eval_every`` epochs, frees them when its pass ends instead of
    keeping idle processes alive for the whole run."""

    def workers() -> list[multiprocessing.Process]:
        return [p for p in multiprocessing.active_children() if p.daemon]

    before = workers()
    evaluation = _load(_cfg(shards, "torch"), train=False)
    assert len(list(evaluation.epoch(0))) == 5
    assert not [p for p in workers() if p not in before]  # (earlier tests' workers may end meanwhile)
    training = _load(_cfg(shards, "torch"))
    assert list(training.epoch(0))
    alive = [p for p in workers() if p not in before]
    assert alive
    assert list(training.epoch(1)) and all(p.is_alive() for p in alive)  # the same workers serve epoch 1
    del training  # the DataLoader's iterator ends its persistent workers when collected
    for process in alive:
        process.join(timeout=20)
    assert not any(p.is_alive() for p in alive)


def test_workers_obey_only_their_owners_sigterm(shards: Path) -> None:
    """A job-wide SIGTERM (sent here by another process) leaves loader workers running; the owner's own
    SIGTERM (DataLoader's terminate() of a worker that did not stop when told) ends them, so such a
    worker is not left behind until its owner exits."""
    before = set(multiprocessing.active_children())
    loader = _load(_cfg(shards, "torch"))
    assert list(loader.epoch(0))
    workers = [p for p in multiprocessing.active_children() if p.daemon and p not in before]
    assert workers
    for worker in workers:
        subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)  # not from the owner
    time.sleep(1.5)  # the workers take signals once a second
    assert all(w.is_alive() for w in workers) and list(loader.epoch(1))
    for worker in workers:
        worker.terminate()  # from the owner
    for worker in workers:
        worker.join(timeout=10)
    assert not [w for w in workers if w.is_alive()]


@pytest.mark.slow
def test_workers_end_when_their_owner_is_killed(shards: Path) -> None:
    """Workers ignore SIGTERM; when the process that owns them dies without cleaning up (SIGKILL), they end
    within seconds instead of living on with their fork server."""
    then = "print(*[p.pid for p in multiprocessing.active_children()], flush=True); time.sleep(300)"
    script, env = _worker_script(shards, "killed_owner", then)
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env) as owner:
        children = [int(pid) for pid in owner.stdout.readline().split()]
        assert children
        owner.kill()
    deadline = time.monotonic() + 20
    alive = children
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [pid for pid in children if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)]
    assert not alive, f"workers {alive} outlived their owner"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_auto_picks_the_fallback_on_cpu() -> None:
    kind, why = choose_loader("auto", torch.device("cpu"))
    assert kind == "torch" and "CUDA" in why
    assert choose_loader("dali", torch.device("cpu"))[0] == "dali"
    assert choose_loader("torch", torch.device("cuda"))[0] == "torch"


def test_unreadable_shards_are_one_line_errors(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="manifest.json: not found"):
        _load(_cfg(tmp_path, "torch"))
    with pytest.raises(LoaderError, match="no split 'testing'"):
        build_loader(_cfg(shards, "torch"), split="testing", rank=0, world_size=1, device="cpu", seed=0, train=True)
    with pytest.raises(LoaderError, match="smaller than data.crop_size"):
        _load(_cfg(shards, "torch", load_size=30))
    copy = shutil.copytree(shards, tmp_path / "copy")
    next(copy.glob("training-*.idx")).write_text("v1.2 1\njpg 512 100\n")
    with pytest.raises(LoaderError, match=r"\.idx: line 2: expected groups"):
        _load(_cfg(copy, "dali"))


def _handmade_shards(root: Path, photo_size: tuple[int, int], label_size: tuple[int, int]) -> Path:
    """One training shard of two samples written by hand (cyclegan-shard refuses mismatched sizes)."""
    root.mkdir()
    lines = []
    with tarfile.open(root / "training-000000.tar", "w") as tar:
        for i in range(2):
            photo, label = io.BytesIO(), io.BytesIO()
            Image.new("RGB", photo_size[::-1], (90, 120, 150)).save(photo, "JPEG")
            Image.new("L", label_size[::-1], 3).save(label, "PNG")
            members = {"jpg": photo.getvalue(), "label.png": label.getvalue()}
            lines.append(" ".join(_add_member(tar, f"KEY{i}.{ext}", data) for ext, data in members.items()))
    (root / "training-000000.idx").write_text("v1.2 2\n" + "".join(f"{line}\n" for line in lines))
    split = {"shards": ["training-000000.tar"], "shard_samples": [2], "samples": 2}
    manifest = {"format": "cyclegan-shard/1", "splits": {"training": split}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.mark.parametrize("loader", LOADERS)
def test_label_of_another_size_is_named(tmp_path: Path, loader: str) -> None:
    shards = _handmade_shards(tmp_path / "shards", photo_size=(40, 48), label_size=(40, 44))
    with pytest.raises(
        CorruptSampleError, match=r"training-000000\.tar: KEY0: photo is \(40, 48\) but its label is \(40, 44\)"
    ):
        next(iter(_load(_cfg(shards, loader), train=False).epoch(0)))
    good = _handmade_shards(tmp_path / "good", photo_size=(40, 48), label_size=(40, 48))
    batch = next(iter(_load(_cfg(good, loader), train=False).epoch(0)))
    assert batch["key"] == ["KEY0", "KEY1"] and int(batch["label"].unique()) == 3


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")
def test_device_decode_path_matches_worker_decode(shards: Path) -> None:
    """On CUDA the fallback ships JPEG bytes and decodes whole batches in the training process;
    that path (``decode_jpeg`` on a list, then per-image resize/crop) runs here on the CPU."""
    cfg = _cfg(shards, "torch", load_size=36, paired=True)
    in_workers = list(_load(cfg).epoch(1))
    device_path = _load(cfg)
    device_path.gpu_decode = True  # what a CUDA device sets
    in_process = list(device_path.epoch(1))
    assert [b["key"] for b in in_process] == [b["key"] for b in in_workers]
    for a, b in zip(in_process, in_workers, strict=True):
        assert torch.equal(a["photo"], b["photo"]) and torch.equal(a["label"], b["label"])


@pytest.mark.parametrize("loader", LOADERS)
def test_shard_gone_after_start_is_one_line(shards: Path, tmp_path: Path, loader: str) -> None:
    copy = shutil.copytree(shards, tmp_path / "shards")
    built = _load(_cfg(copy, loader), train=False)
    (copy / "training-000001.tar").unlink()
    with pytest.raises(LoaderError) as error:
        for _ in built.epoch(0):
            pass
    assert "\n" not in str(error.value) and str(copy) in str(error.value)


# ---------------------------------------------------------------- unpaired shards: two domains


@pytest.fixture
def unpaired(unpaired_shards: Path) -> Path:
    return unpaired_shards


def _epoch_counts(shards: Path, loader: str, world_size: int, epoch: int, **changes: object) -> list[tuple]:
    """Per rank: (photo key counts, map key counts, batches) of one epoch."""
    cfg = _cfg(shards, loader, num_workers=0, **changes)
    ranks = []
    for rank in range(world_size):
        built = _load(cfg, rank=rank, world_size=world_size, seed=7)
        batches = list(built.epoch(epoch))
        photos = Counter(key for batch in batches for key in batch["key"])
        maps = Counter(key for batch in batches for key in batch["seg_key"])
        ranks.append((photos, maps, len(batches)))
    return ranks


@pytest.mark.parametrize("loader", LOADERS)
def test_unpaired_max_reads_the_larger_domain_once_and_cycles_the_smaller(unpaired: Path, loader: str) -> None:
    photos = {s.key for s in read_data(unpaired, "training").photos.samples}
    maps = {s.key for s in read_data(unpaired, "training").maps.samples}
    assert len(photos) == 13 and len(maps) == 8 and photos.isdisjoint(maps)
    # One process, batch 2: 12 of the 13 photos once each; 12 map draws over 8 maps, so 4 of them twice.
    ((seen_photos, seen_maps, batches),) = _epoch_counts(unpaired, loader, 1, epoch=0)
    assert batches == 6 and set(seen_photos.values()) == {1} and len(seen_photos) == 12
    assert sorted(seen_maps.values()) == [1] * 4 + [2] * 4 and set(seen_maps) == maps
    # Two processes: blocks of 6 and 7 photos and of 4 and 4 maps; 3 batches each (6 draws per rank).
    ranks = _epoch_counts(unpaired, loader, 2, epoch=1)
    assert [batches for *_, batches in ranks] == [3, 3]
    assert set(ranks[0][0]).isdisjoint(ranks[1][0]) and set(ranks[0][1]).isdisjoint(ranks[1][1])
    assert len(set(ranks[0][0]) | set(ranks[1][0])) == 12  # one photo of the block of 7 sits out
    for _, seen, _ in ranks:  # 6 draws over a block of 4: two maps twice, two once
        assert sorted(seen.values()) == [1, 1, 2, 2]
    assert set(ranks[0][1]) | set(ranks[1][1]) == maps
    # The photo that sits out changes with the epoch: over three epochs the ranks read every photo.
    later = [set(photos) for epoch in (2, 3) for photos, _, _ in _epoch_counts(unpaired, loader, 2, epoch)]
    assert set().union(*later, ranks[0][0], ranks[1][0]) == photos


@pytest.mark.parametrize("loader", LOADERS)
def test_unpaired_min_reads_the_smaller_domain_once_and_a_changing_part_of_the_larger(
    unpaired: Path, loader: str
) -> None:
    sat_out = []
    for epoch in range(3):
        ((seen_photos, seen_maps, batches),) = _epoch_counts(unpaired, loader, 1, epoch, epoch_length="min")
        assert batches == 4 and set(seen_maps.values()) == {1} and len(seen_maps) == 8
        assert set(seen_photos.values()) == {1} and len(seen_photos) == 8
        sat_out.append(frozenset(seen_photos))
    assert len(set(sat_out)) == 3, "a different part of the photos sits out each epoch"
    ranks = _epoch_counts(unpaired, loader, 2, 0, epoch_length="min")
    assert [batches for *_, batches in ranks] == [2, 2]
    assert set(ranks[0][0]).isdisjoint(ranks[1][0]) and set(ranks[0][1]).isdisjoint(ranks[1][1])


@pytest.mark.parametrize("loader", LOADERS)
def test_unpaired_min_takes_the_larger_domain_in_turns_when_it_is_twice_the_epoch(unpaired: Path, loader: str) -> None:
    """A fresh DALI pipeline starts each epoch at the start of its block: with data.sample_size 4 on two
    processes (2 draws per rank), each rank's 6 or 7 photos are read in parts of 2 (3) that take turns."""
    seen = [Counter(), Counter()]
    for epoch in range(3):
        for rank, (photos, _, _) in enumerate(_epoch_counts(unpaired, loader, 2, epoch, epoch_length="min",
                                                             sample_size=4)):  # fmt: skip
            seen[rank].update(photos)
    assert set(seen[0].values()) == {1} and len(seen[0]) == 6  # the block of 6, each photo once in 3 epochs
    assert set(seen[1].values()) == {1} and len(seen[1]) == 6  # 6 of the block of 7: parts of 2, 2 and 3


@pytest.mark.parametrize("loader", LOADERS)
def test_unpaired_order_is_seeded_changes_each_epoch_and_resumes(unpaired: Path, loader: str) -> None:
    cfg = _cfg(unpaired, loader, num_workers=0)

    def order(built, epoch: int, skip: int = 0) -> list[tuple[str, str]]:
        return [pair for b in built.epoch(epoch, skip) for pair in zip(b["key"], b["seg_key"], strict=True)]

    first = _load(cfg, seed=3)
    assert order(first, 0) != order(first, 1)
    assert order(_load(cfg, seed=3), 1) == order(first, 1)
    assert order(_load(cfg, seed=4), 1) != order(first, 1)
    full = list(first.epoch(2))
    resumed = list(_load(cfg, seed=3).epoch(2, skip_batches=4))
    assert [(b["key"], b["seg_key"]) for b in resumed] == [(b["key"], b["seg_key"]) for b in full[4:]]
    assert all(torch.equal(a["photo"], b["photo"]) and torch.equal(a["label"], b["label"])
               for a, b in zip(resumed, full[4:], strict=True))  # fmt: skip


@pytest.mark.parametrize("loader", LOADERS)
def test_unpaired_batches_decode_each_domain(unpaired: Path, loader: str) -> None:
    batch = next(iter(_load(_cfg(unpaired, loader, num_workers=0)).epoch(0)))
    assert batch["photo"].shape == (2, 3, 32, 32) and batch["label"].shape == (2, 32, 32)
    assert torch.equal(batch["seg"], ids_to_seg(batch["label"]))
    assert all(key.startswith("ADE_train_") for key in batch["key"])
    assert all(key.startswith("map_") for key in batch["seg_key"])


def test_unpaired_refusals_are_one_line(unpaired: Path, tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"manifest.json: data.paired: true .* needs paired shards"):
        _load(_cfg(unpaired, "torch", paired=True))
    with pytest.raises(LoaderError, match=r"the maps domain has 8 sample\(s\), fewer than the 9 processes"):
        _load(_cfg(unpaired, "torch"), world_size=9)
    with pytest.raises(LoaderError, match=r"split 'training' is unpaired .*; scoring needs a paired split"):
        read_split(unpaired, "training")
    assert len(read_split(unpaired, "validation").samples) == 3
    copy = shutil.copytree(unpaired, tmp_path / "shards")
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": "cyclegan-shard/9"}))
    with pytest.raises(LoaderError, match=r"format 'cyclegan-shard/9' is not one this version reads") as error:
        _load(_cfg(copy, "torch"))
    assert "\n" not in str(error.value)
