"""The portable loader: torchvision decoding in DataLoader workers, for hosts without DALI or a GPU.

Samples are read by byte range through the shards' ``.idx`` files rather than streamed
tar by tar (webdataset's ``split_by_node``/``split_by_worker``): random access lets every
rank take exactly its block of samples (the rule in :mod:`cyclegan.data.catalog`, the same
as DALI's), lets the epoch's order and every crop and flip be drawn up front in the main
process — so batches do not depend on the number of workers — and makes resuming mid-epoch
a matter of skipping entries in a list instead of re-reading data.

On a CUDA device, photos travel to the main process as JPEG bytes and are decoded there
by nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``); labels (PNG) are always decoded
by the workers, as PNG has no GPU decoder. nvJPEG waits for its own stream at the end of each
batch, so that decode (and the crops and colouring after it) runs in a prefetch thread on a
stream of its own: the training thread only queues a wait for the batch's event on the device.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from cyclegan.data.catalog import (
    LABEL,
    PHOTO,
    CorruptSampleError,
    DomainRead,
    LoaderError,
    Sample,
    ShardLoader,
    end_with_owner,
    epoch_seed,
    worker_context,
)
from cyclegan.data.codecs import decode_label, decode_photo, read_part
from cyclegan.palette import ids_to_seg, seg_colours

Crop = tuple[float, float, bool]
"""Where to crop (fractions of the free height and width, as DALI's crop_pos_y/x) and whether to flip."""
Item = tuple[int, int, Crop, Crop]
"""One pair: photo sample number, segmentation sample number (in the same split when paired, else in
each domain's), and the crop of each."""

CENTRE: Crop = (0.5, 0.5, False)

def resize_crop(image: torch.Tensor, load_size: int, crop_size: int, crop: Crop, nearest: bool) -> torch.Tensor:
    """Short side to ``load_size``, then a ``crop_size`` square at ``crop``, flipped if asked."""
    height, width = image.shape[-2:]
    if min(height, width) != load_size:
        scale = load_size / min(height, width)
        size = [max(load_size, round(height * scale)), max(load_size, round(width * scale))]
        mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
        image = tvf.resize(image, size, interpolation=mode, antialias=not nearest)
        height, width = size
    top = int(crop[0] * (height - crop_size) + 0.5)  # halves round up, as in DALI
    left = int(crop[1] * (width - crop_size) + 0.5)
    image = image[..., top : top + crop_size, left : left + crop_size]
    return image.flip(-1) if crop[2] else image


class _PairDataset(Dataset):
    """Decodes and crops one :data:`Item`; errors travel back as values, so they reach the
    trainer as one line instead of a worker traceback."""

    def __init__(self, photos: list[Sample], maps: list[Sample], load_size: int, crop_size: int, paired: bool,
                 photo_bytes: bool) -> None:  # fmt: skip
        self.photos, self.maps = photos, maps
        self.load_size, self.crop_size = load_size, crop_size
        self.paired = paired
        self.photo_bytes = photo_bytes
        self.files: dict[Any, BinaryIO] = {}

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, item: Item) -> dict[str, Any]:
        photo_sample, seg_sample = self.photos[item[0]], self.maps[item[1]]
        try:
            label = decode_label(seg_sample, read_part(seg_sample, LABEL, self.files))
            photo = read_part(photo_sample, PHOTO, self.files)
            if not self.photo_bytes:
                photo = decode_photo(photo_sample, photo)
                check_pair(photo_sample, tuple(photo.shape[-2:]), tuple(label.shape[-2:]), self.paired)
                photo = resize_crop(photo, self.load_size, self.crop_size, item[2], nearest=False)
        except LoaderError as e:  # travels to the training process as a value, raised there
            return {"error": e}
        return {
            "photo": photo,
            "photo_index": item[0],
            "photo_crop": item[2],
            "label_size": tuple(label.shape[-2:]),
            "label": resize_crop(label, self.load_size, self.crop_size, item[3], nearest=True)[0],
            "key": photo_sample.key,
            "seg_key": seg_sample.key,
        }


def check_pair(sample: Sample, photo_size: tuple[int, ...], label_size: tuple[int, ...], paired: bool) -> None:
    """In paired mode one crop window serves both, so their sizes (H, W) must agree."""
    if paired and photo_size != label_size:
        raise CorruptSampleError(f"{sample.where()}: photo is {photo_size} but its label is {label_size} (H, W)")


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [item["error"] for item in items if "error" in item]
    if errors:
        return {"error": errors[0]}
    photos = [item["photo"] for item in items]
    return {
        "photo": photos if photos[0].ndim == 1 else torch.stack(photos),  # JPEG bytes or decoded crops
        "photo_index": [item["photo_index"] for item in items],
        "photo_crop": [item["photo_crop"] for item in items],
        "label_size": [item["label_size"] for item in items],
        "label": torch.stack([item["label"] for item in items]),
        "key": [item["key"] for item in items],
        "seg_key": [item["seg_key"] for item in items],
    }


class _EpochBatches:
    """The batch sampler of the loader's one DataLoader: its batches are swapped in per epoch,
    so the worker processes live as long as the loader instead of being restarted every epoch."""

    def __init__(self) -> None:
        self.batches: list[list[Item]] = []

    def __iter__(self) -> Iterator[list[Item]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TorchLoader(ShardLoader):
    """Yields the batch contract ``{photo, seg, label, key, seg_key}`` on ``device`` (``seg`` if ``coloured``)."""

    name = "torch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gpu_decode = self.device.type == "cuda"
        self.colours = seg_colours().to(self.device)  # once, not per batch
        self._batches = _EpochBatches()
        self._loader: DataLoader | None = None

    def plan(self, epoch: int) -> list[Item]:
        """The epoch's items in order: drawn from (seed, epoch, rank) alone."""
        count = self.batches_per_epoch * self.cfg.batch_size
        if self.unpaired:
            return self._plan_domains(epoch, count)
        block = torch.tensor(self.block)
        if not self.train:
            return [(int(i), int(i), CENTRE, CENTRE) for i in block[:count]]
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, self.rank))
        photos = block[torch.randperm(len(block), generator=gen)][:count]
        segs = photos if self.paired else block[torch.randperm(len(block), generator=gen)][:count]
        photo_crops = self._crops(count, gen)
        seg_crops = photo_crops if self.paired else self._crops(count, gen)
        return [(int(p), int(s), pc, sc) for p, s, pc, sc in zip(photos, segs, photo_crops, seg_crops, strict=True)]

    def _plan_domains(self, epoch: int, count: int) -> list[Item]:
        """Unpaired: each domain drawn as :func:`~cyclegan.data.catalog.domain_read` says, photos first."""
        photo_read, map_read = self.domain_reads(epoch)
        if not self.train:
            return [(p, m, CENTRE, CENTRE) for p, m in zip(photo_read.window[:count], map_read.window[:count],
                                                           strict=True)]  # fmt: skip
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, self.rank))
        photos, maps = draw(photo_read, gen), draw(map_read, gen)
        photo_crops, seg_crops = self._crops(count, gen), self._crops(count, gen)
        return list(zip(photos, maps, photo_crops, seg_crops, strict=True))

    def _crops(self, count: int, gen: torch.Generator) -> list[Crop]:
        positions = torch.rand(count, 2, generator=gen).tolist()
        flips = (torch.rand(count, generator=gen) < (0.5 if self.cfg.flip else 0.0)).tolist()
        return [(y, x, f) for (y, x), f in zip(positions, flips, strict=True)]

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[dict[str, Any]]:
        items, size = self.plan(epoch), self.cfg.batch_size
        batches = [items[i * size : (i + 1) * size] for i in range(skip_batches, self.batches_per_epoch)]
        if not batches:
            return
        self._batches.batches = batches
        if not self.gpu_decode:
            yield from self._device_batches()
            return
        prefetch = Prefetch(self._device_batches(), depth=2, device=self.device)
        try:
            yield from prefetch
        finally:
            prefetch.close()

    def _device_batches(self) -> Iterator[dict[str, Any]]:
        for batch in self._data_loader():
            if "error" in batch:
                raise batch["error"]
            yield self._to_device(batch)

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            dataset = _PairDataset(self.photos.samples, self.maps.samples, self.cfg.load_size, self.cfg.crop_size,
                                   self.paired, self.gpu_decode)  # fmt: skip
            workers = self.cfg.num_workers
            self._loader = DataLoader(
                dataset,
                batch_sampler=self._batches,
                num_workers=workers,
                collate_fn=_collate,
                pin_memory=self.gpu_decode,
                prefetch_factor=4 if workers else None,
                persistent_workers=workers > 0 and self.train,  # an evaluation pass every N epochs frees its workers
                multiprocessing_context=worker_context("cyclegan.data.fallback") if workers else None,
                worker_init_fn=functools.partial(end_with_owner, os.getpid()),
            )
        return self._loader

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        photo = self._gpu_photos(batch) if self.gpu_decode else batch["photo"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True).long()
        out = {"photo": photo.float().div_(127.5).sub_(1.0), "label": label, "key": batch["key"],
               "seg_key": batch["seg_key"]}  # fmt: skip
        if self.coloured:
            out["seg"] = ids_to_seg(label, self.colours)
        return out

    def _gpu_photos(self, batch: dict[str, Any]) -> torch.Tensor:
        """nvJPEG decodes the whole batch at once; resize and crop then run on the GPU too."""
        samples = [self.photos.samples[i] for i in batch["photo_index"]]
        try:
            photos = decode_jpeg(batch["photo"], mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # find and name the bad one
            photos = [
                decode_photo(sample, data, self.device) for sample, data in zip(samples, batch["photo"], strict=True)
            ]
        crops = []
        for sample, photo, label_size, crop in zip(
            samples, photos, batch["label_size"], batch["photo_crop"], strict=True
        ):
            check_pair(sample, tuple(photo.shape[-2:]), label_size, self.paired)
            crops.append(resize_crop(photo, self.cfg.load_size, self.cfg.crop_size, crop, nearest=False))
        return torch.stack(crops)


def draw(read: DomainRead, gen: torch.Generator) -> list[int]:
    """``read.count`` sample numbers of ``read.window``: a random part of it, or, when cycled, fresh
    permutations of all of it one after the other."""
    window = torch.tensor(read.window)
    passes = -(-read.count // len(window))
    order = torch.cat([window[torch.randperm(len(window), generator=gen)] for _ in range(passes)])
    return order[: read.count].tolist()


_END = object()


class Prefetch:
    """Runs ``items`` in a thread of its own, up to ``depth`` items ahead, on a CUDA stream of its
    own when ``device`` is a GPU. Each item comes with an event recorded after its work was queued;
    the consumer's stream waits for it on the device, so the consumer's thread never blocks on
    the producer's syncs. Errors travel to the consumer; ``close`` stops the thread."""

    def __init__(self, items: Iterator[dict[str, Any]], depth: int, device: torch.device) -> None:
        self.device = device
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(items,), name="cyclegan-prefetch", daemon=True)
        self.thread.start()

    def _produce(self, items: Iterator[dict[str, Any]]) -> None:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        try:
            with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                for item in items:
                    event = torch.cuda.Event() if cuda else None
                    if event is not None:
                        event.record(stream)
                    if not self._put((item, event)):
                        return
        except BaseException as error:  # noqa: BLE001 - every failure is the consumer's to raise
            self._put(error)
            return
        self._put(_END)

    def _put(self, value: Any) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            value = self.queue.get()
            if value is _END:
                return
            if isinstance(value, BaseException):
                raise value
            item, event = value
            if event is not None:
                consumer = torch.cuda.current_stream(self.device)
                consumer.wait_event(event)
                for tensor in item.values():
                    if isinstance(tensor, torch.Tensor):
                        tensor.record_stream(consumer)  # made on the producer's stream, used on this one
            yield item

    def close(self) -> None:
        self.stopped.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        self.thread.join()
