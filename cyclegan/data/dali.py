"""The primary loader: a DALI graph that reads the shards, decodes photos on the GPU (nvJPEG,
``device="mixed"``) and hands over finished batches on the device.

Everything after the read happens inside the graph: short-side resize (labels by nearest
neighbour), a crop and flip shared by photo and label in paired mode, colouring the labels
with the training palette (one lookup table per channel; skipped in classes mode) and scaling to [-1, 1]. Without
a GPU the same graph runs on the CPU (``device_id=None``), which is what the tests exercise.

A fresh pipeline is built for each epoch, seeded by (seed, epoch, rank): an epoch's order then
depends on nothing that happened before it, so resuming mid-epoch replays the same order
(reading and dropping the batches already trained on). Building takes well under a second,
noise against an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from cyclegan.data.catalog import (
    LABEL,
    PHOTO,
    CorruptSampleError,
    DomainRead,
    LoaderError,
    ShardLoader,
    Split,
    epoch_seed,
)
from cyclegan.data.codecs import decode_label, decode_photo, read_part
from cyclegan.palette import seg_colours

SHUFFLE_BUFFER = 1024
"""Samples DALI's reader shuffles among (its shuffle is a buffer; the shards are pre-shuffled)."""


def dali_available() -> tuple[bool, str]:
    """Whether DALI imports here, and if not, why (for the loader choice's log line)."""
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except ImportError as e:
        return False, f"nvidia-dali is not importable ({e})"
    return True, "nvidia-dali is installed"


def _files(split: Split) -> dict[str, Any]:
    return {"paths": [str(p) for p in split.tars], "index_paths": [str(p) for p in split.indexes],
            "missing_component_behavior": "error"}  # fmt: skip


def _domain_reader(split: Split, read: DomainRead, train: bool) -> dict[str, Any]:
    """Reader arguments for one domain of an unpaired split, as :func:`~cyclegan.data.catalog.domain_read`
    says. ``stick_to_shard`` keeps a reader in its window as it comes round again (a cycled domain), and
    without padding a pass ends on its last sample; DALI finishes a pass before starting the next, so a
    cycled sample is seen ``count // n`` or ``count // n + 1`` times. A buffer holding the whole window
    makes the part read of a larger one a fair draw (a fresh pipeline starts at the window's beginning)."""
    fill = SHUFFLE_BUFFER if read.whole or read.cycled else max(SHUFFLE_BUFFER, len(read.window))
    return {**_files(split), "shard_id": read.shard_id, "num_shards": read.num_shards, "stick_to_shard": True,
            "pad_last_batch": False, "random_shuffle": train, "initial_fill": fill}  # fmt: skip


def _build(loader: DaliLoader, seed: int, epoch: int) -> Any:
    """The DALI graph of epoch ``epoch`` of ``loader``, seeded by ``seed``."""
    from nvidia.dali import fn, pipeline_def, types

    cfg, train, paired = loader.cfg, loader.train, loader.paired
    gpu = loader.device.type == "cuda"
    reader = {**_files(loader.photos), "shard_id": loader.rank, "num_shards": loader.world_size,
              "random_shuffle": train, "initial_fill": SHUFFLE_BUFFER}  # fmt: skip
    if loader.unpaired:
        photo_read, map_read = loader.domain_reads(epoch)
        photo_reader = _domain_reader(loader.photos, photo_read, train)
        seg_reader = _domain_reader(loader.maps, map_read, train)
    else:
        photo_reader = seg_reader = reader
    palette = seg_colours().tolist()

    def crop_params() -> tuple[Any, Any, Any]:
        if not train:
            return 0.5, 0.5, 0
        flip = fn.random.coin_flip(probability=0.5 if cfg.flip else 0.0)
        return fn.random.uniform(range=(0.0, 1.0)), fn.random.uniform(range=(0.0, 1.0)), flip

    def crop(image: Any, params: tuple[Any, Any, Any], **kwargs: Any) -> Any:
        y, x, flip = params
        size = (cfg.crop_size, cfg.crop_size)
        return fn.crop_mirror_normalize(image, crop=size, crop_pos_y=y, crop_pos_x=x, mirror=flip, **kwargs)

    def key_bytes(encoded: Any) -> Any:
        # "<tar>:<offset>:<key>.<ext>", zero-padded to the batch's longest
        return fn.pad(fn.get_property(encoded, key="source_info"), fill_value=0)

    @pipeline_def
    def graph() -> tuple[Any, ...]:
        if paired:
            jpg, png = fn.readers.webdataset(ext=[PHOTO, LABEL], name="photos", seed=seed + 1, **reader)
        else:
            jpg = fn.readers.webdataset(ext=[PHOTO], name="photos", seed=seed + 1, **photo_reader)
            png = fn.readers.webdataset(ext=[LABEL], name="segs", seed=seed + 2, **seg_reader)
        photo_crop = crop_params()
        seg_crop = photo_crop if paired else crop_params()

        photo = fn.decoders.image(jpg, device="mixed" if gpu else "cpu", output_type=types.RGB)
        photo_size = fn.peek_image_shape(jpg)  # from the JPEG header, on the CPU even in mixed mode
        photo = fn.resize(photo, resize_shorter=cfg.load_size, antialias=True)
        photo = crop(photo, photo_crop, dtype=types.FLOAT, output_layout="CHW", mean=[127.5] * 3, std=[127.5] * 3)

        label = fn.decoders.image(png, device="cpu", output_type=types.GRAY)
        label_size = label.shape()
        label = fn.resize(label, resize_shorter=cfg.load_size, interp_type=types.INTERP_NN, antialias=False)
        label = crop(label, seg_crop, dtype=types.UINT8, output_layout="HWC")
        if gpu:
            label = label.gpu()
        outputs = (label, key_bytes(jpg), key_bytes(png), photo_size, label_size)
        if not loader.coloured:  # classes mode: the step builds one-hot maps from the ids
            return photo, *outputs
        channels = [
            fn.lookup_table(label, keys=list(range(len(palette))), values=[c[i] for c in palette], dtype=types.FLOAT)
            for i in range(3)
        ]
        seg = fn.transpose(fn.cat(*channels, axis=2), perm=[2, 0, 1])
        return photo, seg, *outputs

    return graph(
        batch_size=cfg.batch_size,
        num_threads=max(1, cfg.num_workers),
        device_id=(loader.device.index or 0) if gpu else None,
        seed=seed,
        prefetch_queue_depth=2,
    )


OUTPUTS = ["photo", "seg", "label", "key", "seg_key", "photo_size", "label_size"]
"""The graph's outputs, in order; without colouring it has no ``seg``."""


def _sources(padded: torch.Tensor) -> list[tuple[str, str]]:
    """(tar, key) of each sample, from DALI's ``source_info`` strings."""
    infos = [bytes(row).rstrip(b"\0").decode() for row in padded.cpu().tolist()]
    return [(info.split(":", 1)[0], info.rsplit(":", 1)[-1].split(".", 1)[0]) for info in infos]


def _one_line(error: Exception) -> str:
    """What a multi-line DALI error says, without the graph traceback and C++ locations around it."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if "encountered:" in lines:
        lines = lines[lines.index("encountered:") + 1 :]
    text = " ".join(line for line in lines if not line.startswith(("C++ context", "Current pipeline object")))
    return text.split(" C++ context:")[0][:300]


class DaliLoader(ShardLoader):
    """Yields the batch contract ``{photo, seg, label, key, seg_key}`` on ``device`` (``seg`` if ``coloured``)."""

    name = "dali"

    def epoch(self, epoch: int, skip_batches: int = 0) -> Iterator[dict[str, Any]]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipe = _build(self, epoch_seed(self.seed, epoch, self.rank), epoch)
        try:
            pipe.build()
        except RuntimeError as e:  # no usable GPU, driver mismatch, unreadable files, ...
            raise LoaderError(f"{self.photos.tars[0].parent}: DALI could not start: {_one_line(e)} "
                              "(data.loader=torch avoids DALI)") from None  # fmt: skip
        # The named reader only sets when the iterator would stop (the loop stops at the batch count
        # first); a cycled reader's window is shorter than the epoch, so it must not be the one.
        reader_name = "segs" if self.unpaired and self.domain_reads(epoch)[0].cycled else "photos"
        try:
            names = OUTPUTS if self.coloured else [n for n in OUTPUTS if n != "seg"]
            iterator = DALIGenericIterator(
                [pipe], names, reader_name=reader_name, last_batch_policy=LastBatchPolicy.DROP, auto_reset=False
            )  # reads the first batch already
            for number in range(self.batches_per_epoch):
                batch = next(iterator)[0]
                if number >= skip_batches:
                    yield self._contract(batch)
        except RuntimeError as e:
            raise self._explain(e, epoch) from None

    def _contract(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        sources = _sources(batch["key"])
        if self.paired:
            photo_sizes = batch["photo_size"][:, :2].cpu().tolist()
            label_sizes = batch["label_size"][:, :2].cpu().tolist()
            for (tar, key), photo_size, label_size in zip(sources, photo_sizes, label_sizes, strict=True):
                if photo_size != label_size:
                    raise CorruptSampleError(
                        f"{tar}: {key}: photo is {tuple(photo_size)} but its label is {tuple(label_size)} (H, W)"
                    )
        out = {
            "photo": batch["photo"],
            "label": batch["label"][..., 0].to(self.device, torch.int64),
            "key": [key for _, key in sources],
            "seg_key": [key for _, key in _sources(batch["seg_key"])],
        }
        if self.coloured:
            out["seg"] = batch["seg"]
        return out

    def _explain(self, error: RuntimeError, epoch: int) -> LoaderError:
        """DALI's decode errors do not say which sample: find it by decoding what this rank reads."""
        files: dict[Any, Any] = {}
        if self.unpaired:
            photo_read, map_read = self.domain_reads(epoch)
            photos, maps = photo_read.window, map_read.window
        else:
            photos = maps = self.block
        try:
            for i in photos:
                decode_photo(self.photos.samples[i], read_part(self.photos.samples[i], PHOTO, files))
            for i in maps:
                decode_label(self.maps.samples[i], read_part(self.maps.samples[i], LABEL, files))
        except CorruptSampleError as located:
            return located
        return LoaderError(f"{self.photos.tars[0].parent}: DALI pipeline failed: {_one_line(error)}")
