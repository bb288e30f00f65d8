"""Hand-built generators with known outputs, and test-made images and shards.

``two_colour_generator`` is a real ``Generator`` (so it exports and loads like a trained
one) whose weights make it a per-pixel switch: on an image with two levels in ``channel``,
pixels at the upper level come out as colour ``high`` and the others as ``low``. Instance
norm keeps only each channel's pattern, so a switch on "above/below the mean" is what a
network of this shape can compute exactly (each norm keeps the two levels' signs).
Resolution survives the two stride-2 layers because the test images are flat on blocks
aligned with the /4 grid: the strided convs read one pixel of each 4x4 cell (centre tap)
and the transposed convs copy it back to the cell (nearest upsampling).
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from cyclegan.checkpoint import export_network
from cyclegan.models import Generator
from cyclegan.palette import TRAIN_PALETTE

# Two classes whose training colours have every channel at 0 or 255, which tanh reaches.
HIGH_CLASS = 63  # bookcase, (255, 255, 0)
LOW_CLASS = 8  # bed, (0, 255, 255)
GAIN = 100.0  # drives the final tanh to +-1


@torch.no_grad()
def _switch(g: Generator, channel: int) -> Generator:
    """Zero ``g`` except for the path that carries "is ``channel`` above its mean?" to the last layer:
    decoder channel 0 is positive where it is, channel 1 where it is not."""
    for p in g.parameters():
        p.zero_()  # residual block: conv of nothing -> 0, so the block is the identity
    first, down1, down2 = g.encoder[1], g.encoder[4], g.encoder[7]
    first.weight[0, channel, 3, 3] = 1.0  # ch 0 = x, ch 1 = -x; after norm + ReLU: above / below mean
    first.weight[1, channel, 3, 3] = -1.0
    for conv in (down1, down2):
        conv.weight[0, 0, 1, 1] = conv.weight[1, 1, 1, 1] = 1.0  # one pixel per 2x2
    for up in (g.decoder[0], g.decoder[3]):
        up.weight[0, 0, 1:3, 1:3] = up.weight[1, 1, 1:3, 1:3] = 1.0  # nearest 2x upsampling
    return g


@torch.no_grad()
def two_colour_generator(high: tuple[int, int, int], low: tuple[int, int, int], channel: int = 0) -> Generator:
    """A Generator (ngf=8, 1 residual block) mapping above-mean ``channel`` to ``high``, else ``low``."""
    g = _switch(Generator(3, 3, n_residual_blocks=1, ngf=8), channel)
    last = g.decoder[-2]
    for c in range(3):
        last.weight[c, 0, 3, 3] = GAIN if high[c] > 127 else -GAIN
        last.weight[c, 1, 3, 3] = GAIN if low[c] > 127 else -GAIN
    return g.eval()


@torch.no_grad()
def two_class_real2seg() -> Generator:
    """classes mode, photo -> logits: red above the mean -> HIGH_CLASS, else LOW_CLASS (by argmax)."""
    g = _switch(Generator(3, 151, n_residual_blocks=1, ngf=8, head="logits"), channel=0)
    g.decoder[-1].weight[HIGH_CLASS, 0, 1, 1] = g.decoder[-1].weight[LOW_CLASS, 1, 1, 1] = GAIN  # centre tap
    return g.eval()


@torch.no_grad()
def two_class_seg2real(light: tuple[int, ...] = (0, HIGH_CLASS)) -> Generator:
    """classes mode, one-hot map -> photo: the ``light`` classes white, every other class black (the
    embedding's channel 0 is 1 on them, and the switch reads that channel)."""
    g = _switch(Generator(151, 3, n_residual_blocks=1, ngf=8, embed_channels=4), channel=0)
    g.embed.weight[0, list(light)] = 1.0
    last = g.decoder[-2]
    last.weight[:, 0, 3, 3], last.weight[:, 1, 3, 3] = GAIN, -GAIN
    return g.eval()


def export_class_generators(directory: Path) -> tuple[Path, Path]:
    """(real2seg, seg2real) files of the two hand-built classes-mode generators."""
    return (
        export_network(two_class_real2seg(), "real2seg", directory / "real2seg_gen_3.pt", epoch=3, seg_mode="classes"),
        export_network(two_class_seg2real(), "seg2real", directory / "seg2real_gen_3.pt", epoch=3, seg_mode="classes"),
    )


def colour(class_id: int) -> tuple[int, int, int]:
    return tuple(TRAIN_PALETTE[class_id].tolist())


def export_generators(directory: Path) -> tuple[Path, Path]:
    """(real2seg, seg2real) files of the two hand-built generators, as training exports them."""
    return export_real2seg(directory / "real2seg_gen_3.pt"), export_seg2real(directory / "seg2real_gen_3.pt")


def export_real2seg(path: Path) -> Path:
    """photo -> seg: red above the mean -> HIGH_CLASS, else LOW_CLASS."""
    return export_network(two_colour_generator(colour(HIGH_CLASS), colour(LOW_CLASS)), "real2seg", path, epoch=3)


def export_seg2real(path: Path) -> Path:
    """seg -> photo: red of the training colour above the mean -> white, else black."""
    return export_network(two_colour_generator((255, 255, 255), (0, 0, 0)), "seg2real", path, epoch=3)


def block_labels(
    height: int, width: int, seed: int, classes: tuple[int, ...] = (0, HIGH_CLASS, LOW_CLASS, 5)
) -> np.ndarray:
    """Random class ids from ``classes``, constant on 8x8 blocks.

    8x8 rather than 4x4 so that each JPEG DCT block of the grey photo is one flat value,
    which JPEG stores almost exactly: no ringing moves a pixel across the image mean.
    """
    rng = np.random.default_rng(seed)
    blocks = rng.choice(classes, size=(-(-height // 8), -(-width // 8)))
    return np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:height, :width].astype(np.uint8)


def photo_for(labels: np.ndarray) -> np.ndarray:
    """A photo the two-colour real2seg generator translates into ``predicted_for(labels)``.

    HIGH_CLASS and unlabeled pixels are light grey, LOW_CLASS and class 5 dark grey; so
    class 5 is always predicted as LOW_CLASS (a known error) and everything else is right.
    Grey, so JPEG's subsampled colour planes carry nothing to blur.
    """
    grey = np.where(np.isin(labels, [HIGH_CLASS, 0]), 200, 40).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def predicted_for(labels: np.ndarray) -> np.ndarray:
    return np.where(np.isin(labels, [HIGH_CLASS, 0]), HIGH_CLASS, LOW_CLASS).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_shards(directory: Path, samples: list[tuple[np.ndarray, np.ndarray]], per_shard: int = 2) -> str:
    """(photo, label) pairs -> ``validation-00000N.tar`` in the cyclegan-shard format; returns the brace pattern.

    No samples -> one empty tar.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for start in range(0, max(len(samples), 1), per_shard):
        with wds.TarWriter(str(directory / f"validation-{start // per_shard:06d}.tar")) as sink:
            for i, (photo, label) in enumerate(samples[start : start + per_shard], start=start):
                sink.write(
                    {
                        "__key__": f"ADE_val_{i:08d}",
                        "jpg": jpeg_bytes(photo),
                        "label.png": png_bytes(label),
                        "json": json.dumps({"height": label.shape[0], "width": label.shape[1]}).encode(),
                    }
                )
    last = max(len(samples) - 1, 0) // per_shard
    return str(directory / f"validation-{{000000..{last:06d}}}.tar")


class Evil:
    """Unpickling this creates ``marker``: proof that a loader ran pickled code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_evil_pickle(path: Path, marker: Path) -> Path:
    """A pickle (not a torch zip file) whose loading with full unpickling creates ``marker``."""
    with open(path, "wb") as f:
        pickle.dump({"format": "cyclegan-ade20k/1", "payload": Evil(str(marker))}, f)
    return path
