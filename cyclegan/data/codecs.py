"""Reading and decoding one sample's members, as both loaders do: by byte range from its tar, then
JPEG (photo) and PNG (class ids) through torchvision.io, with errors that name the sample.

torchvision 0.29 marks its codecs deprecated in favour of TorchCodec. The ``DeprecationWarning`` is
raised inside torchvision, so Python's default filters already hide it outside ``__main__``; the
test configuration filters it explicitly.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import torch
from torchvision.io import ImageReadMode, decode_jpeg, decode_png

from cyclegan.data.catalog import LABEL, PHOTO, CorruptSampleError, LoaderError, Sample


def read_part(sample: Sample, ext: str, files: dict[Any, BinaryIO]) -> torch.Tensor:
    """One member's bytes as a uint8 tensor, through a per-process cache of open tars."""
    offset, size = sample.parts[ext]
    try:
        handle = files.get(sample.shard)
        if handle is None:
            handle = files[sample.shard] = open(sample.shard, "rb")  # noqa: SIM115 - kept open for the worker's life
        handle.seek(offset)
        data = handle.read(size)
    except OSError as e:
        raise LoaderError(f"{sample.shard}: cannot read ({e.strerror or e})") from None
    if len(data) != size:
        raise CorruptSampleError(f"{sample.where()}: .{ext} is cut short ({len(data)} of {size} bytes)")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_photo(sample: Sample, data: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """JPEG bytes -> 3 x H x W uint8 RGB, or an error naming the sample."""
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as e:
        raise CorruptSampleError(f"{sample.where()}: .{PHOTO} does not decode ({_first_line(e)})") from None


def decode_label(sample: Sample, data: torch.Tensor) -> torch.Tensor:
    """PNG bytes -> 1 x H x W uint8 class ids, or an error naming the sample."""
    try:
        label = decode_png(data, mode=ImageReadMode.UNCHANGED)
    except RuntimeError as e:
        raise CorruptSampleError(f"{sample.where()}: .{LABEL} does not decode ({_first_line(e)})") from None
    if label.shape[0] != 1:
        raise CorruptSampleError(f"{sample.where()}: .{LABEL} has {label.shape[0]} channels, expected 1 (class ids)")
    return label


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
