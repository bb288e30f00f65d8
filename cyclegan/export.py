"""``cyclegan-export``: an exported generator as a deployment graph, ONNX or ``torch.export``.

    cyclegan-export --generator runs/ade20k/real2seg_gen_200.pt --format onnx --out real2seg.onnx
    cyclegan-export --generator runs/ade20k/seg2real_gen_200.pt --format torch-export --out seg2real.pt2

The graph is the generator between the files' pixels (``cyclegan.inference.Translator``), so a
deployment needs no Python of this project:

* photo -> seg (real2seg): input ``photos``, uint8 (N, 3, H, W) RGB 0..255; output ``class_ids``,
  int64 (N, H, W), 0..150 (0 = unlabeled): the logits' argmax (classes mode) or the nearest
  training-palette colour (rgb mode).
* seg -> photo (seg2real): input ``class_ids``, int64 (N, H, W), 0..150 (out-of-range ids are
  clamped); output ``photos``, uint8 (N, 3, H, W).

N, H and W are dynamic; H and W must be multiples of 4 (declared to the exporter as 4 x a
dimension, since the generator checks it). Both ``model.seg_mode``s export. The ONNX file carries
the generator file's metadata (role, seg_mode, epoch, weights) as the metadata property
``cyclegan``, which ``cyclegan-generate --generator FILE.onnx`` reads; the ``.pt2`` file keeps it in
``extra_files["cyclegan.json"]``.

Before the command reports success it runs the exported graph (onnxruntime for ONNX) and the
PyTorch module on the same inputs at two sizes and prints the difference: for photos, the largest
absolute difference on the 0..255 scale, which must be at most ``--tolerance`` (default 1: a
rounding step); for class ids, the fraction of pixels whose class differs, at most
``--id-tolerance`` (default 0.001; a pixel whose two best classes are within float rounding may
flip). Outside them the file is removed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from cyclegan.arguments import HelpFormatter, run_reporting_errors
from cyclegan.checkpoint import CheckpointError, load_network
from cyclegan.inference import ONNX_META_KEY, InputError, OnnxTranslator, Translator, translator_for
from cyclegan.palette import NUM_CLASSES

PROG = "cyclegan-export"
CHECK_SIZES = ((64, 64), (96, 128))
"""(H, W) of the verification inputs: a square and a non-square size, neither the tracing size."""
TRACE_SIZE = (32, 48)


class ExportError(RuntimeError):
    """The exported graph disagrees with the PyTorch module beyond the tolerance."""


def example_input(domain: str, batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Inputs in the graph's contract: random photos, or class-id maps of random rectangles."""
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    if domain == "photo":
        return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=gen)
    coarse = torch.randint(0, NUM_CLASSES + 1, (batch, 1, height // 4, width // 4), generator=gen)
    return torch.nn.functional.interpolate(coarse.float(), size=size, mode="nearest").long()[:, 0]


def dynamic_shapes(domain: str) -> dict[str, dict[int, Any]]:
    from torch.export import Dim

    batch, h, w = Dim("batch", min=1, max=4096), Dim("h4", min=1, max=4096), Dim("w4", min=1, max=4096)
    if domain == "photo":
        return {"x": {0: batch, 2: 4 * h, 3: 4 * w}}
    return {"x": {0: batch, 1: 4 * h, 2: 4 * w}}


def io_names(domain: str) -> tuple[str, str]:
    return ("photos", "class_ids") if domain == "photo" else ("class_ids", "photos")


def export_onnx(module: Translator, meta: dict[str, Any], out: Path, opset: int) -> None:
    import onnx

    example = example_input(module.domain, 2, TRACE_SIZE, seed=0)
    source, target = io_names(module.domain)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates each stage
        torch.onnx.export(module, (example,), str(out), dynamo=True, opset_version=opset,
                          dynamic_shapes=dynamic_shapes(module.domain), input_names=[source],
                          output_names=[target], external_data=False)  # fmt: skip
    model = onnx.load(str(out))
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    onnx.save(model, str(out))


def export_program(module: Translator, meta: dict[str, Any], out: Path) -> None:
    example = example_input(module.domain, 2, TRACE_SIZE, seed=0)
    program = torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(module.domain))
    torch.export.save(program, str(out), extra_files={"cyclegan.json": json.dumps(meta)})


def verify(module: Translator, out: Path, fmt: str, tolerance: float, id_tolerance: float) -> list[str]:
    """Run the file and the module at ``CHECK_SIZES``; one line per size; raise ``ExportError`` if off."""
    run = OnnxTranslator(out, torch.device("cpu")) if fmt == "onnx" else torch.export.load(str(out)).module()
    lines = []
    for seed, size in enumerate(CHECK_SIZES, start=1):
        x = example_input(module.domain, 2, size, seed)
        with torch.no_grad():
            expected, got = module(x), run(x)
        if got.shape != expected.shape or got.dtype != expected.dtype:
            raise ExportError(f"{out}: at {size[0]}x{size[1]} the graph gives {got.dtype} {tuple(got.shape)}, "
                              f"the module {expected.dtype} {tuple(expected.shape)}")  # fmt: skip
        if module.domain == "photo":
            differ = (got != expected).float().mean().item()
            lines.append(f"{size[0]}x{size[1]}: class ids differ at {differ:.4%} of pixels "
                         f"(tolerance {id_tolerance:.2%})")  # fmt: skip
            bad = differ > id_tolerance
        else:
            diff = (got.int() - expected.int()).abs().max().item()
            lines.append(f"{size[0]}x{size[1]}: max abs difference {diff} of 255 (tolerance {tolerance:g})")
            bad = diff > tolerance
        if bad:
            raise ExportError(f"{out}: {lines[-1]}: the exported graph does not match the generator")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter,
                                     allow_abbrev=False)  # fmt: skip
    parser.add_argument("--generator", required=True, type=Path, help="real2seg_gen_N.pt or seg2real_gen_N.pt")
    parser.add_argument("--format", required=True, choices=("onnx", "torch-export"), help="graph format")
    parser.add_argument("--out", required=True, type=Path, help="file to write (.onnx, or .pt2 for torch-export)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset")
    parser.add_argument("--tolerance", type=float, default=1.0, help="largest photo difference allowed, 0..255")
    parser.add_argument("--id-tolerance", type=float, default=0.001,
                        help="largest fraction of pixels whose class id may differ")  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    generator, meta = load_network(args.generator, kind="generator")
    meta = {k: v for k, v in meta.items() if k != "state_dict"}
    module = translator_for(generator.float(), meta).eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.format == "onnx":
            try:
                export_onnx(module, meta, args.out, args.opset)
            except ImportError as e:
                raise InputError(f"--format onnx needs onnx, onnxscript and onnxruntime ({e.name} is missing): "
                                 "pip install -e '.[export]'") from None  # fmt: skip
        else:
            export_program(module, meta, args.out)
        lines = verify(module, args.out, args.format, args.tolerance, args.id_tolerance)
    except ExportError as e:
        args.out.unlink(missing_ok=True)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(f"{PROG}: check {line}")
    print(f"{PROG}: {args.generator} ({meta['role']}, {module.mode} mode, {meta.get('weights', 'raw')} weights) "
          f"-> {args.out} ({args.format}; {' -> '.join(io_names(module.domain))}, dynamic batch and sides)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0, 1 when the graph does not match, 2 after a one-line input error."""
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv), (InputError, CheckpointError))


if __name__ == "__main__":
    raise SystemExit(main())
