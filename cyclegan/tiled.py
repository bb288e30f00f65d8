"""Exact tiled execution of a generator: the whole-image result, with device memory bounded by a tile.

Cutting an image into tiles and translating each on its own leaves seams: every instance norm
normalises with the tile's statistics instead of the image's, and the tile borders lack their
neighbours' context. Here the network runs one convolution at a time over the whole image, so
neither happens:

* ``plan`` reads the generator as steps: convolutions (with their padding, reflection or zeros),
  transposed convolutions, instance norms, residual blocks and pointwise functions (ReLU, tanh, the
  1x1 class embedding, a translator's input and output conversions).
* Each convolution is one pass over tiles of its *output*. A tile's input region, halo included, comes
  from global coordinates (rows ``y0*stride - pad`` to ``(y1-1)*stride - pad + kernel``), so strided
  layers need no alignment rule; the region is read from the previous step's whole-image tensor,
  the pointwise steps pending on it are applied, and only where it crosses the image border is it
  padded, by reflection or zeros as the layer pads the whole image. A transposed convolution's tile
  reads the inputs that reach it (``ceil((y0 + pad - kernel + 1)/stride)`` to ``floor((y1 - 1 + pad)/stride)``),
  runs unpadded and keeps the rows that land in the tile, then adds the bias.
* A pass writes its raw output to a whole-image tensor in the *store* (host memory by default) and,
  when an instance norm follows, merges each tile's per-channel (mean, M2) into the image's in float64
  (Chan et al.'s pairwise update), so the norm uses the whole image's biased variance with PyTorch's
  eps, exactly as ``nn.InstanceNorm2d`` does; the norm and the ReLU after it are applied when the next
  pass reads its tiles.
* A residual block's sum ``x + block(x)`` is written tile by tile over the block's last raw output.
* The last convolution's tiles go straight through the remaining pointwise steps and the caller's
  ``finish`` (tanh and uint8, an argmax, a palette decode), so the 3- or 151-channel output of the
  network never exists at full size in floating point.

What it costs: every layer's output makes one round trip through the store (for a GPU, over PCIe),
and each tile recomputes its halo of one layer (3 pixels a side for a 7x7 convolution); peak store
memory is about two whole-image tensors of the widest layer (see ``footprint``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.models import ResidualBlock

Pointwise = Callable[[torch.Tensor], torch.Tensor]
"""A function of each pixel alone (over channels): it commutes with cutting an image into tiles."""

TILE_MULTIPLE = 4
"""Tile sides are multiples of the generator's total stride, so every layer's tiles have whole sides."""


class TilingError(ValueError):
    """A generator with a layer this module cannot run in tiles, or a tile size it cannot use."""


@dataclass(frozen=True)
class Conv:
    module: nn.Conv2d
    pad: int
    reflect: bool


@dataclass(frozen=True)
class ConvT:
    module: nn.ConvTranspose2d


@dataclass(frozen=True)
class Norm:
    eps: float


@dataclass(frozen=True)
class Map:
    fn: Pointwise
    channels: int | None = None
    """Channels out, where the function changes their number (a 1x1 convolution)."""


@dataclass(frozen=True)
class Residual:
    steps: tuple


Step = Conv | ConvT | Norm | Map | Residual


def _uniform(values: Sequence[int], what: str, layer: nn.Module) -> int:
    if len(set(values)) != 1:
        raise TilingError(f"cannot tile a {type(layer).__name__} with unequal {what} {tuple(values)}")
    return values[0]


def _pointwise(module: nn.Module) -> Pointwise | None:
    """The out-of-place function of an activation (tiles may be views of the store: never in place)."""
    if isinstance(module, nn.ReLU):
        return torch.relu
    if isinstance(module, nn.Tanh):
        return torch.tanh
    if isinstance(module, nn.LeakyReLU):
        slope = module.negative_slope
        return lambda t: F.leaky_relu(t, slope)
    if isinstance(module, nn.Identity):
        return lambda t: t
    return None


def plan(modules: Iterable[nn.Module]) -> list[Step]:
    """The steps of a sequence of layers (``Generator``: its embedding, encoder, translator and decoder).

    Raises ``TilingError`` naming a layer it cannot run in tiles (anything but the layers above, or a
    norm with learned or running statistics, which ``Generator`` never has)."""
    steps: list[Step] = []
    reflect = 0
    for m in modules:
        if isinstance(m, nn.Sequential):
            steps += plan(m)
        elif isinstance(m, ResidualBlock):
            steps.append(Residual(tuple(plan(m.block))))
        elif isinstance(m, nn.ReflectionPad2d):
            reflect = _uniform(m.padding, "padding", m)
        elif isinstance(m, nn.Conv2d):
            kernel, stride = _uniform(m.kernel_size, "kernel", m), _uniform(m.stride, "stride", m)
            pad = _uniform(m.padding, "padding", m) if not isinstance(m.padding, str) else -1
            if pad < 0 or m.padding_mode != "zeros" or _uniform(m.dilation, "dilation", m) != 1 or (reflect and pad):
                raise TilingError(f"cannot tile a Conv2d with padding {m.padding!r} ({m.padding_mode}), "
                                  f"dilation {m.dilation} after a reflection pad of {reflect}")  # fmt: skip
            if kernel == stride == 1 and not pad and not reflect:
                steps.append(Map(m, m.out_channels))  # a 1x1 convolution is a function of each pixel
            else:
                steps.append(Conv(m, reflect or pad, bool(reflect)))
            reflect = 0
        elif isinstance(m, nn.ConvTranspose2d):
            for what in ("kernel_size", "stride", "padding", "output_padding"):
                _uniform(getattr(m, what), what, m)
            if _uniform(m.dilation, "dilation", m) != 1 or reflect:
                raise TilingError("cannot tile a ConvTranspose2d with dilation or after a reflection pad")
            steps.append(ConvT(m))
        elif isinstance(m, nn.InstanceNorm2d):
            if m.affine or m.track_running_stats:
                raise TilingError("cannot tile an InstanceNorm2d with affine parameters or running statistics")
            steps.append(Norm(m.eps))
        elif (fn := _pointwise(m)) is not None:
            steps.append(Map(fn))
        else:
            raise TilingError(f"cannot tile a generator with a {type(m).__name__} layer")
    if reflect:
        raise TilingError("a reflection pad that no convolution follows")
    return steps


def generator_plan(generator: nn.Module) -> list[Step]:
    """``plan`` of a ``cyclegan.models.Generator``."""
    embed = [generator.embed] if getattr(generator, "embed", None) is not None else []
    return plan([*embed, generator.encoder, generator.translator, generator.decoder])


# --- running -------------------------------------------------------------------------------------


@dataclass
class Field:
    """A whole-image tensor (1, C, H, W) in the store and the pointwise steps still to apply to it."""

    data: torch.Tensor
    pending: list[Pointwise] = field(default_factory=list)

    def read(self, rows: tuple[int, int], cols: tuple[int, int], device: torch.device, reflect: bool) -> torch.Tensor:
        """Rows x cols in global coordinates, on ``device``, pending steps applied; where the region
        lies outside the image, the image's reflection (``reflect``) or zeros, as the layer pads it."""
        height, width = self.data.shape[-2:]
        top, bottom = max(rows[0], 0), min(rows[1], height)
        left, right = max(cols[0], 0), min(cols[1], width)
        x = self.data[..., top:bottom, left:right].to(device, non_blocking=True)
        for fn in self.pending:
            x = fn(x)
        pad = (left - cols[0], cols[1] - right, top - rows[0], rows[1] - bottom)
        if any(pad):
            x = F.pad(x, pad, mode="reflect" if reflect else "constant")
        return x


class Moments:
    """Per-channel mean and sum of squared deviations of a tensor seen in tiles, merged in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = self.m2 = torch.zeros(())

    def add(self, tile: torch.Tensor) -> None:
        var, mean = torch.var_mean(tile.float(), dim=(0, 2, 3), correction=0)
        n = tile.shape[0] * tile.shape[2] * tile.shape[3]
        mean, m2 = mean.double(), var.double() * n
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta.square() * (self.count * n / total)
        self.count = total

    def norm(self, eps: float) -> Pointwise:
        """``InstanceNorm2d``'s function with these statistics: (x - mean) / sqrt(biased var + eps)."""
        mean = self.mean.float()[None, :, None, None]
        invstd = (self.m2 / self.count + eps).rsqrt().float()[None, :, None, None]
        return lambda t: (t.float() - mean) * invstd


def spans(length: int, step: int) -> Iterator[tuple[int, int]]:
    """[start, end) pieces of 0..length, ``step`` long, the last up to 1.5 ``step``: a remainder under
    half a step joins the piece before it. Slivers waste their halo, and in bfloat16 on the CPU
    (torch 2.14, oneDNN) a convolution with a one-pixel-wide output can return wrong values."""
    starts = list(range(0, length, step))
    if len(starts) > 1 and length - starts[-1] < step / 2:
        starts.pop()
    yield from zip(starts, [*starts[1:], length], strict=True)


def out_size(step: Conv | ConvT, size: int) -> int:
    """A convolution step's output side for an input side."""
    m = step.module
    kernel, stride = m.kernel_size[0], m.stride[0]
    if isinstance(step, Conv):
        return (size + 2 * step.pad - kernel) // stride + 1
    return (size - 1) * stride - 2 * m.padding[0] + kernel + m.output_padding[0]


class TiledRun:
    """One image through ``steps`` in tiles of ``tile`` pixels of the output (at the network's input
    resolution; a layer at 1/4 resolution runs tiles of ``tile/4``).

    ``device`` computes, ``store`` holds the whole-image tensors between passes; ``amp`` runs the
    convolutions in bfloat16 autocast (raw outputs are stored in bfloat16, the residual stream in
    float32)."""

    def __init__(
        self, steps: list[Step], tile: int, device: torch.device, store: torch.device, amp: bool = False
    ) -> None:
        if tile < TILE_MULTIPLE or tile % TILE_MULTIPLE:
            raise TilingError(f"--tile {tile}: must be a positive multiple of {TILE_MULTIPLE}")
        self.steps, self.tile, self.device, self.store, self.amp = steps, tile, device, store, amp

    def __call__(
        self, image: torch.Tensor, encode: Pointwise | None = None, finish: Pointwise | None = None
    ) -> torch.Tensor:
        """``finish(net(encode(image)))`` for one image (1, C, H, W) in the store; the result in the store."""
        self.size = tuple(image.shape[-2:])
        if self.size[0] % TILE_MULTIPLE or self.size[1] % TILE_MULTIPLE:
            raise TilingError(f"input sides must be multiples of {TILE_MULTIPLE}, got {self.size}")
        pending = [encode] if encode else []
        out = self._run(self.steps, Field(image, pending), [finish] if finish else [])
        return out.data

    def _tiles(self, height: int, width: int) -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
        rows = max(1, self.tile * height // self.size[0])
        cols = max(1, self.tile * width // self.size[1])
        for row in spans(height, rows):
            for col in spans(width, cols):
                yield row, col

    def _run(self, steps: Sequence[Step], x: Field, finish: list[Pointwise]) -> Field:
        last_conv = max((i for i, s in enumerate(steps) if isinstance(s, (Conv, ConvT, Residual))), default=-1)
        i = 0
        while i < len(steps):
            step = steps[i]
            if isinstance(step, Map):
                x = Field(x.data, [*x.pending, step.fn])
            elif isinstance(step, Residual):
                x = self._residual(x, step)
            elif isinstance(step, Norm):
                raise TilingError("an instance norm that does not follow a convolution")
            else:
                norm = i + 1 < len(steps) and isinstance(steps[i + 1], Norm)
                after = None
                if i == last_conv and not norm:  # the rest is pointwise: finish in this pass
                    after = [s.fn for s in steps[i + 1 :]] + finish
                    finish, i = [], len(steps)
                data, moments = self._conv(x, step, norm, after)
                x = Field(data)
                if norm:
                    x.pending.append(moments.norm(steps[i + 1].eps))
                    i += 1
            i += 1
        if x.pending or finish:  # materialise what is left (only for nets that end in no convolution)
            x = self._materialise(Field(x.data, [*x.pending, *finish]))
        return x

    def _materialise(self, x: Field) -> Field:
        out = None
        for rows, cols in self._tiles(*x.data.shape[-2:]):
            out = self._write(out, x.read(rows, cols, self.device, reflect=False), x.data.shape[-2:], rows, cols)
        return Field(out)

    def _write(
        self, out: torch.Tensor | None, tile: torch.Tensor, size: Sequence[int], rows: tuple, cols: tuple
    ) -> torch.Tensor:
        if out is None:
            out = torch.empty((*tile.shape[:-2], *size), dtype=tile.dtype, device=self.store)
        out[..., rows[0] : rows[1], cols[0] : cols[1]] = tile.to(self.store, non_blocking=True)
        return out

    def _conv(
        self, x: Field, step: Conv | ConvT, norm: bool, after: list[Pointwise] | None
    ) -> tuple[torch.Tensor, Moments]:
        m = step.module
        kernel, stride = m.kernel_size[0], m.stride[0]
        height, width = (out_size(step, s) for s in x.data.shape[-2:])
        moments, out = Moments(), None
        for rows, cols in self._tiles(height, width):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                if isinstance(step, Conv):
                    region = [(a * stride - step.pad, (b - 1) * stride - step.pad + kernel) for a, b in (rows, cols)]
                    y = F.conv2d(x.read(*region, self.device, step.reflect), m.weight, m.bias, stride, groups=m.groups)
                else:
                    y = self._transposed(x, m, rows, cols)
            if norm:
                moments.add(y)
            out = self._write(out, _apply(after, y) if after is not None else y, (height, width), rows, cols)
        return out, moments

    def _transposed(
        self, x: Field, m: nn.ConvTranspose2d, rows: tuple[int, int], cols: tuple[int, int]
    ) -> torch.Tensor:
        kernel, stride, pad = m.kernel_size[0], m.stride[0], m.padding[0]
        size = x.data.shape[-2:]
        # the inputs i that reach outputs y0..y1-1 through y = i*stride - pad + k, 0 <= k < kernel
        reach = [
            (max(0, -((kernel - 1 - a - pad) // stride)), min(n, (b - 1 + pad) // stride + 1))
            for (a, b), n in zip((rows, cols), size, strict=True)
        ]
        y = F.conv_transpose2d(x.read(*reach, self.device, reflect=False), m.weight, None, stride, groups=m.groups)
        # y's first row is output row i0*stride - pad: crop (negative pad) or extend to the tile
        (r0, _), (c0, _) = reach
        top, left = r0 * stride - pad - rows[0], c0 * stride - pad - cols[0]
        y = F.pad(y, (left, cols[1] - cols[0] - left - y.shape[-1], top, rows[1] - rows[0] - top - y.shape[-2]))
        return y if m.bias is None else y + m.bias[None, :, None, None]

    def _residual(self, x: Field, block: Residual) -> Field:
        inner = self._run(block.steps, Field(x.data, list(x.pending)), [])
        for rows, cols in self._tiles(*x.data.shape[-2:]):
            total = x.read(rows, cols, self.device, reflect=False).float() + inner.read(rows, cols, self.device, False)
            inner.data[..., rows[0] : rows[1], cols[0] : cols[1]] = total.to(self.store, inner.data.dtype)
        return Field(inner.data)


def _apply(fns: Iterable[Pointwise], x: torch.Tensor) -> torch.Tensor:
    for fn in fns:
        x = fn(x)
    return x


# --- memory --------------------------------------------------------------------------------------


SLACK = 1.4
"""Measured peaks reached 1.26x the counted tensors (whole image, classes seg -> photo, 2 MP, CPU): the rest
is the allocator's and the convolutions' own. Too high an estimate only tiles earlier, with the same result."""


@dataclass(frozen=True)
class Footprint:
    """Estimated peak bytes of one translation: ``whole`` image at once; tiled, the ``store`` (whole-image
    tensors between passes) and the ``device`` working set of one tile."""

    whole: int
    store: int
    device: int


def footprint(
    steps: list[Step], channels: int, height: int, width: int, batch: int = 1, tile: int = 0, out_channels: int = 151
) -> Footprint:
    """Peak memory of running ``steps`` on ``batch`` images of ``channels`` x ``height`` x ``width``
    (after any input conversion), counting the float32 tensors alive at once in eager PyTorch: a layer's
    input, its padded input twice (the convolution's own copy in its preferred layout) and its output
    (and a residual block's input), or ``out_channels`` floats a pixel for the finishing step (logits,
    or rgb's distances to the palette). Tiled: the store holds a pass's input and raw output (and the
    block input) at full size; the device, the same for one tile and its halo. Whole and store are
    scaled by ``SLACK`` for what the allocator holds beyond them: ``cyclegan-bench tiled`` compares the
    estimates with measured peaks (README: Large images)."""
    whole = store = dev = 0
    tile = tile or max(height, width)
    result = 2 * height * width  # int64 ids (or uint8 photos): two floats' worth a pixel at most
    last = steps[-1] if steps else None
    if isinstance(last, Map):  # the last convolution's tiles are finished in its pass: nothing raw stored
        last = next((s for s in reversed(steps) if not isinstance(s, Map)), None)

    def walk(steps: Sequence[Step], c: int, h: int, w: int, held: int) -> tuple[int, int, int]:
        nonlocal whole, store, dev
        for s in steps:
            if isinstance(s, Map) and s.channels:
                whole = max(whole, held + (2 * c + s.channels) * h * w)
                c = s.channels
            elif isinstance(s, Residual):
                c, h, w = walk(s.steps, c, h, w, held + c * h * w)
                store = max(store, held + 2 * c * h * w)
            elif isinstance(s, (Conv, ConvT)):
                m = s.module
                kernel, stride = m.kernel_size[0], m.stride[0]
                ho, wo = out_size(s, h), out_size(s, w)
                co = m.out_channels
                padded = c * (h + 2 * s.pad) * (w + 2 * s.pad) if isinstance(s, Conv) else c * h * w
                whole = max(whole, held + c * h * w + 2 * padded + co * ho * wo, held + 2 * co * ho * wo)
                store = max(store, held + c * h * w + (result if s is last else co * ho * wo))
                to = max(1, tile * ho // height)
                reach = (to * stride + kernel) if isinstance(s, Conv) else (to // stride + kernel)
                dev = max(dev, 3 * c * reach * reach + 2 * co * to * to)
                c, h, w = co, ho, wo
        return c, h, w

    walk(steps, channels, height, width, 0)
    finish = (out_channels + 2) * height * width  # the output's floats and what decoding them makes
    return Footprint(
        int(SLACK * 4 * batch * max(whole, finish)),
        int(SLACK * 4 * store),
        4 * (dev + (out_channels + 2) * tile * tile),
    )
