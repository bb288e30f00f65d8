"""Running an exported generator: what ``cyclegan-generate`` and ``cyclegan-eval`` share.

Loading a ``*_gen_N.pt`` file onto a device with the segmentation encoding it records, the
conversions between uint8 pictures and the generators' [-1, 1] domain, and a forward pass on
images of any size; and ``Translator``, the generator between the files' pixels (uint8 photos, class
ids) that generate runs and deployment graphs hold. Nothing here reads files other than the
generator, or writes any.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.checkpoint import load_network
from cyclegan.palette import NUM_CLASSES, seg_colours
from cyclegan.seg_encoding import SegEncoding, encoding_for, mode_of_export, one_hot
from cyclegan.tiled import TILE_MULTIPLE, Footprint, TiledRun, footprint, generator_plan


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


def translate(generator: nn.Module, images: torch.Tensor, tile: int = 0) -> torch.Tensor:
    """Run ``generator`` on images of any size: pad to multiples of 4, crop the result back;
    with ``tile`` > 0, in exact tiles of that side on the images' device (:mod:`cyclegan.tiled`).

    Edge-replicating a few pixels changes the instance-norm statistics far less than
    resizing would, and keeps every output pixel aligned with its input pixel (and label).
    """
    height, width = images.shape[-2:]
    padded = F.pad(images, (0, -width % 4, 0, -height % 4), mode="replicate")
    if tile:
        run = TiledRun(generator_plan(generator), tile, images.device, images.device)
        return torch.cat([run(image[None]) for image in padded])[..., :height, :width]
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
        return self.finish(self.generator(self.encode(x)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The files' pixels -> the generator's input: photos to [-1, 1]; class ids (B, H, W), or
        (B, 1, H, W) as tiles hold them, to one-hot maps (classes) or palette colours (rgb)."""
        if self.domain == "photo":
            return x.float() / 127.5 - 1.0
        ids = (x[:, 0] if x.dim() == 4 else x).long().clamp(0, NUM_CLASSES)
        if self.mode == "classes":
            return one_hot(ids)  # written as floats: F.one_hot's int64 tensor would be twice that
        return F.embedding(ids, self.colours).permute(0, 3, 1, 2)

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """The generator's output -> the files' pixels: class ids from the logits' argmax (classes) or
        the nearest palette colour (rgb); photos to uint8. A function of each pixel, so tiles can run it."""
        if self.domain == "seg":
            return to_uint8(out)
        if self.mode == "classes":
            return out.argmax(1)
        # |y - c|^2 = |y|^2 - 2 y.c + |c|^2, and |y|^2 is the same for every colour c; one 151-channel
        # tensor (summed into in place), not three
        distances = torch.einsum("bchw,kc->bkhw", out.float(), -2 * self.colours)
        return distances.add_(self.colour_norms[None, :, None, None]).argmin(1)


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

    def __call__(self, batch: torch.Tensor, schedule: Schedule | None = None) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input_name: batch.numpy()})
        return torch.from_numpy(out)

    def schedule(self, shape: Sequence[int]) -> Schedule:
        """Whole images: an ONNX graph has no layers to tile."""
        return Schedule(0, torch.device("cpu"), 0, 0)


GIB = 1 << 30
TILE_SIDES = (2048, 1024, 512, 256, 128, 64, 32, 16, 8)
"""The tile sides an automatic choice tries, largest (fewest passes over the halos) first."""


def available_memory(device: torch.device) -> int:
    """Bytes a translation may take on ``device``: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Schedule:
    """How one batch runs: whole (``tile`` 0) or in tiles of ``tile`` pixels, the whole-image tensors
    between layers kept on ``store``; ``needs`` is the estimated peak in bytes, ``budget`` what was free."""

    tile: int
    store: torch.device
    needs: int
    budget: int

    def describe(self) -> str:
        where = "" if self.store.type == "cpu" else f", between layers on {self.store}"
        return f"{self.tile}-pixel tiles{where} (about {gigabytes(self.needs)}; {gigabytes(self.budget)} free)"


def gigabytes(size: int) -> str:
    """A memory size for people: GB, or MB below one."""
    return f"{size / GIB:.1f} GB" if size >= GIB else f"{size / (1 << 20):.1f} MB"


class Runner:
    """A ``Translator`` on a device that runs each batch whole or, where the whole image would not fit
    in the memory budget, in exact tiles (:mod:`cyclegan.tiled`): the same numbers, bounded memory.

    ``tile``: None chooses (whole when the estimate fits, else the largest side in ``TILE_SIDES`` that
    does), 0 forces whole images, N forces N-pixel tiles. ``max_memory``: the budget in bytes (default:
    what ``available_memory`` reports); on a GPU it bounds device memory, and the whole-image tensors
    between layers go to host memory when they do not fit beside the tile. ``amp``: bfloat16 autocast.
    CPU tensors in, CPU tensors out."""

    def __init__(
        self,
        translator: Translator,
        device: torch.device,
        tile: int | None = None,
        max_memory: int | None = None,
        amp: bool = False,
    ) -> None:
        if tile is not None and (tile < 0 or tile % TILE_MULTIPLE):
            raise InputError(f"--tile {tile}: must be 0 (whole images) or a positive multiple of {TILE_MULTIPLE}")
        self.translator, self.device = translator.to(device), device
        self.tile, self.max_memory, self.amp = tile, max_memory, amp
        self.steps = generator_plan(translator.generator)

    def schedule(self, shape: Sequence[int]) -> Schedule:
        """The schedule of a batch of ``shape`` (B, 3, H, W) photos or (B, H, W) ids; raises
        ``InputError`` when no schedule fits the budget."""
        batch, height, width = shape[0], shape[-2], shape[-1]
        photo = self.translator.domain == "photo"
        channels = 3 if photo or self.translator.mode == "rgb" else NUM_CLASSES + 1
        out_channels = NUM_CLASSES + 1 if photo else 3

        def needs(tile: int) -> Footprint:
            return footprint(self.steps, channels, height, width, batch, tile, out_channels)

        budget = self.max_memory or available_memory(self.device)
        whole = needs(0).whole
        if self.tile == 0 or (self.tile is None and whole <= budget):
            if whole > budget:
                raise InputError(f"{width}x{height}: a whole image needs about {gigabytes(whole)}, "
                                 f"{gigabytes(budget)} is free; leave --tile unset to tile it")  # fmt: skip
            return Schedule(0, self.device, whole, budget)
        host = budget if self.device.type == "cpu" else available_memory(torch.device("cpu"))
        for tile in [self.tile] if self.tile else TILE_SIDES:
            cost = needs(tile)
            if cost.store + cost.device <= budget:
                return Schedule(tile, self.device, cost.store + cost.device, budget)
            if self.device.type != "cpu" and cost.device <= budget and cost.store <= host:
                return Schedule(tile, torch.device("cpu"), cost.store, host)
        raise InputError(f"{width}x{height}: too large even in {tile}-pixel tiles: the tensors kept between "
                         f"layers need about {gigabytes(cost.store)}, {gigabytes(host)} is free")  # fmt: skip

    def __call__(self, batch: torch.Tensor, schedule: Schedule | None = None) -> torch.Tensor:
        schedule = schedule or self.schedule(batch.shape)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if not schedule.tile:
                return self.translator(batch.to(self.device)).cpu()
        run = TiledRun(self.steps, schedule.tile, self.device, schedule.store, self.amp)
        images = batch[:, None] if batch.dim() == 3 else batch  # ids as (B, 1, H, W)
        outputs = [
            run(image[None].to(schedule.store), self.translator.encode, self.translator.finish)[0].cpu()
            for image in images
        ]
        return torch.stack(outputs)


def load_translator(
    path: Path, device: torch.device, tile: int | None = None, max_memory: int | None = None, amp: bool = False
) -> tuple[Runner | OnnxTranslator, dict[str, Any]]:
    """A ``*_gen_N.pt`` file as a ``Runner`` on ``device``, or a ``.onnx`` file from ``cyclegan-export``
    through onnxruntime, and the generator's metadata. Either maps a CPU batch to CPU outputs; an ONNX
    graph runs whole images only (``tile`` other than None or 0, or ``amp``, is refused)."""
    if path.suffix.lower() == ".onnx":
        if tile or amp:
            raise InputError(f"{path}: --tile and --amp need the generator's .pt file: "
                             "an ONNX graph runs whole images in the precision it was exported in")  # fmt: skip
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        runner = OnnxTranslator(path, device)
        return runner, runner.meta
    generator, meta, _ = load_generator(path, device)
    return Runner(translator_for(generator, meta), device, tile, max_memory, amp), meta
