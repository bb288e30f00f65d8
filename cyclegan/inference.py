"""Running an exported generator: what ``cyclegan-generate`` and ``cyclegan-eval`` share.

Loading a ``*_gen_N.pt`` file onto a device with the segmentation encoding it records, the
conversions between uint8 pictures and the generators' [-1, 1] domain, and a forward pass on
images of any size; and ``Translator``, the generator between the files' pixels (uint8 photos, class
ids) that generate runs and deployment graphs hold. Nothing here reads files other than the
generator, or writes any.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.checkpoint import load_network
from cyclegan.palette import NUM_CLASSES, seg_colours
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


class Translator(nn.Module):
    """A generator with its conversions on both sides, from the files' pixels to the files' pixels:
    what ``cyclegan-generate`` runs and what ``cyclegan-export`` puts in a deployment graph.

    * photo -> seg (real2seg): uint8 photos (B, 3, H, W) -> int64 class ids (B, H, W), 0..150: the
      argmax of the logits (classes mode) or the nearest training-palette colour (rgb mode).
    * seg -> photo (seg2real): integer class ids (B, H, W) -> uint8 photos (B, 3, H, W), the ids fed
      in one-hot (classes) or as training-palette colours (rgb).

    H and W must be multiples of 4. Every operation has a fixed shape rule (no loops over pixels,
    no data-dependent sizes), so the module exports with dynamic batch and sides; rgb decoding
    compares each pixel with all 151 colours at once (151 floats a pixel, as many as classes-mode
    logits).
    """

    def __init__(self, generator: nn.Module, domain: str, mode: str) -> None:
        super().__init__()
        self.generator, self.domain, self.mode = generator, domain, mode
        colours = seg_colours()
        self.register_buffer("colours", colours, persistent=False)
        self.register_buffer("colour_norms", (colours * colours).sum(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.domain == "photo":
            out = self.generator(x.float() / 127.5 - 1.0)
            if self.mode == "classes":
                return out.argmax(1)
            # |y - c|^2 = |y|^2 - 2 y.c + |c|^2, and |y|^2 is the same for every colour c
            dots = torch.einsum("bchw,kc->bkhw", out.float(), self.colours)
            return (self.colour_norms[None, :, None, None] - 2 * dots).argmin(1)
        ids = x.long().clamp(0, NUM_CLASSES)
        if self.mode == "classes":
            maps = F.one_hot(ids, NUM_CLASSES + 1).permute(0, 3, 1, 2).float()
        else:
            maps = F.embedding(ids, self.colours).permute(0, 3, 1, 2)
        return to_uint8(self.generator(maps))


def translator_for(generator: nn.Module, meta: dict[str, Any]) -> Translator:
    """The ``Translator`` of an exported generator, from its file's metadata."""
    return Translator(generator, meta["input"], mode_of_export(meta))


ONNX_META_KEY = "cyclegan"
"""The ONNX metadata property under which ``cyclegan-export`` stores the generator file's metadata (JSON)."""


class OnnxTranslator:
    """A ``Translator`` exported to ONNX, run by onnxruntime: the CUDA provider for a CUDA device when
    onnxruntime has it, else the CPU. Same contract: CPU tensors in, CPU tensors out."""

    def __init__(self, path: Path, device: torch.device) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError(f"{path}: running ONNX files needs onnxruntime: pip install -e '.[export]'") from None
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for every kind of bad file
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise InputError(f"{path}: not an ONNX model onnxruntime can load ({reason})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(ONNX_META_KEY)
        try:
            self.meta = json.loads(raw) if raw else None
            if not isinstance(self.meta, dict) or not {"role", "input", "output"} <= self.meta.keys():
                raise ValueError
        except ValueError:
            raise InputError(f"{path}: an ONNX model without cyclegan-export's metadata (role, seg_mode, ...); "
                             "export a generator with cyclegan-export") from None  # fmt: skip
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input_name: batch.numpy()})
        return torch.from_numpy(out)


def load_translator(path: Path, device: torch.device) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """A ``*_gen_N.pt`` file as a ``Translator`` on ``device``, or a ``.onnx`` file from ``cyclegan-export``
    through onnxruntime, and the generator's metadata. Either maps a CPU batch to CPU outputs."""
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        runner = OnnxTranslator(path, device)
        return runner, runner.meta
    generator, meta, _ = load_generator(path, device)
    translator = translator_for(generator, meta).to(device)

    def run(batch: torch.Tensor) -> torch.Tensor:
        return translator(batch.to(device)).cpu()

    return run, meta
