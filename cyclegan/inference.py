"""Running an exported generator: what ``cyclegan-generate`` and ``cyclegan-eval`` share.

Loading a ``*_gen_N.pt`` file onto a device with the segmentation encoding it records, the
conversions between uint8 pictures and the generators' [-1, 1] domain, and a forward pass on
images of any size. Nothing here reads files other than the generator, or writes any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.checkpoint import load_network
from cyclegan.seg_encoding import SegEncoding, encoding_for, mode_of_export


class InputError(ValueError):
    """An input the user gave that cannot be used, phrased as ``<file>: <what is wrong>``."""


def pick_device(name: str | None) -> torch.device:
    """``--device`` as a torch device, the GPU when none is named and one is present."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available here")
    return device


def load_generator(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any], SegEncoding]:
    """An exported generator on ``device`` (in eval mode), its metadata, and the encoding of its maps
    (``classes`` files record their mode; older files are ``rgb``). Raises ``CheckpointError``."""
    generator, meta = load_network(path, kind="generator")
    return generator.to(device), meta, encoding_for(mode_of_export(meta))


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float in [-1, 1], the generators' domain."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 images (0..255)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def translate(generator: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run ``generator`` on images of any size: pad to multiples of 4, crop the result back.

    Edge-replicating a few pixels changes the instance-norm statistics far less than
    resizing would, and keeps every output pixel aligned with its input pixel (and label).
    """
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, -width % 4, 0, -height % 4), mode="replicate")
    return generator(padded)[..., :height, :width]
