"""Score exported generators on ADE20K shards: segmentation scores for photo -> seg; L1, PSNR and
(with the Inception weights) FID for seg -> photo.

    cyclegan-eval --generator runs/ade20k/real2seg_gen_200.pt --shards data/shards --json report.json
    cyclegan-eval --generator runs/ade20k/seg2real_gen_200.pt --shards data/shards --split validation \\
        --inception-weights weights/weights-inception-2015-12-05-6726825d.pth --limit 500

``--shards`` means what it means to ``cyclegan-train``: the folder ``cyclegan-shard --out`` wrote,
whose manifest lists each split's tars (``--split``, default validation). A tar path or brace
pattern (``'data/shards/validation-{000000..000003}.tar'``) works too.

photo -> seg (the "FCN-score" columns of the CycleGAN paper, with the shard labels as
ground truth): per-pixel accuracy, mean class accuracy and mean IoU over the 150 classes.
Pixels labelled 0 (unlabeled) are ignored; a prediction of 0 (black) on a labelled pixel
counts as wrong. Class means average over the classes present in the ground truth only
(their number is reported); per-class IoU is NaN (null in JSON) for the others. A
``classes``-mode generator's class is its argmax; an ``rgb`` one's colours are decoded to the
nearest training-palette colour. The mode is read from the generator file.

seg -> photo: each label map (drawn in the training palette, or one-hot in classes mode) is
translated and compared with its own photo: mean absolute error and PSNR on the [0, 1] scale
(per image, then averaged), and, given ``--inception-weights``, FID between the translated and
the real photos with the Inception network of the original FID (TF 2015-12-05 weights) read
from a local file.

``--protocol ade20k`` prints the published ADE20K table instead, for one generator or one of each role
(:mod:`cyclegan.protocol` pins it: 256 x 256 images, a transformers segmenter, FID and KID)::

    cyclegan-eval --protocol ade20k --generator runs/ade20k/real2seg_gen_200.pt \\
        --generator runs/ade20k/seg2real_gen_200.pt --segmenter openmmlab/upernet-convnext-small \\
        --shards data/shards --inception-weights weights/weights-inception-2015-12-05-6726825d.pth --json table.json

Without it, images are evaluated at full resolution, one per batch, padded to multiples of 4.
The same functions run inside training: ``evaluate_segmentation(generator, batches, device,
encoding)`` and ``evaluate_photos(generator, batches, device, encoding, fid)`` take the
training loader's batches (``photo``, ``label``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cyclegan.arguments import run_reporting_errors
from cyclegan.checkpoint import CheckpointError, load_trusted
from cyclegan.data.catalog import LABEL, PHOTO, LoaderError, read_split
from cyclegan.inference import InputError, from_uint8, load_generator, pick_device, to_uint8, translate
from cyclegan.palette import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from cyclegan.seg_encoding import RgbEncoding, SegEncoding
from cyclegan.tiled import TILE_MULTIPLE

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance

PROG = "cyclegan-eval"
NUM_IDS = NUM_CLASSES + 1  # ids 0..150; 0 is the ignore index
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
INCEPTION_HELP = (
    f"scored by FID, which needs the Inception weights of the original FID: download {INCEPTION_FILE} "
    f"from {INCEPTION_URL} (torch-fidelity's copy; pytorch-fid's {PYTORCH_FID_URL} holds the same network) "
    "and pass its path with --inception-weights"
)


# --- segmentation scores -------------------------------------------------------------------------


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(151, 151) int64 counts, rows = ground-truth id, columns = predicted id, on the inputs' device.

    Pixels whose ground truth is the ignore index (0) are dropped, so row 0 stays empty;
    column 0 counts labelled pixels predicted as unlabeled. One ``bincount``, no host sync
    beyond the range check.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
    keep = target != IGNORE_INDEX
    target, pred = target[keep].long(), pred[keep].long()
    if target.numel():
        low, high = torch.cat([target, pred]).aminmax()
        if low < 0 or high > NUM_CLASSES:
            raise ValueError(f"class ids must lie in 0..{NUM_CLASSES}, got {low.item()}..{high.item()}")
    return torch.bincount(target * NUM_IDS + pred, minlength=NUM_IDS * NUM_IDS).reshape(NUM_IDS, NUM_IDS)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """Pixel accuracy, mean class accuracy and mean IoU from a ``confusion_matrix`` sum.

    Means are over the classes present in the ground truth (the FCN-score convention), so
    a class absent from the ground truth neither adds an IoU of 0 nor is averaged in;
    predicting it still costs the true class its pixels. Lists are indexed by class id - 1.
    """
    counts = confusion.detach().double().cpu()[1:]  # ground-truth classes 1..150 x predicted ids 0..150
    hits = counts[:, 1:].diagonal()
    gt_pixels = counts.sum(1)
    union = gt_pixels + counts[:, 1:].sum(0) - hits
    present = gt_pixels > 0
    nan = torch.full_like(hits, math.nan)
    class_acc = torch.where(present, hits / gt_pixels, nan)
    iou = torch.where(present, hits / union, nan)
    return {
        "pixel_acc": (hits.sum() / gt_pixels.sum()).item() if present.any() else math.nan,
        "mean_class_acc": class_acc.nanmean().item(),
        "mean_iou": iou.nanmean().item(),
        "classes_present": int(present.sum()),
        "labelled_pixels": int(gt_pixels.sum()),
        "per_class_iou": iou.tolist(),
        "per_class_acc": class_acc.tolist(),
        "gt_pixels": gt_pixels.long().tolist(),
    }


@contextmanager
def evaluating(generator: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration, then the caller's mode back.

    ``no_grad`` rather than ``inference_mode``: results may be all-reduced in place by the
    trainer afterwards, which inference tensors forbid.
    """
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        generator.train(was_training)


def accumulate_confusion(
    generator: nn.Module,
    batches: Iterable[dict],
    device: torch.device | str,
    encoding: SegEncoding | None = None,
    tile: int = 0,
) -> torch.Tensor:
    """Sum of ``confusion_matrix`` over photo -> seg translations of all batches, on ``device``.

    Each batch has ``photo`` (B x 3 x H x W in [-1, 1]) and ``label`` (B x H x W ids); ``encoding``
    turns the generator's output into ids (default rgb); ``tile`` > 0 runs it in exact tiles. Under data
    parallelism all-reduce (sum) this before ``segmentation_scores``.
    """
    encoding = encoding or RgbEncoding()
    total = torch.zeros(NUM_IDS, NUM_IDS, dtype=torch.long, device=device)
    with evaluating(generator):
        for batch in batches:
            label = batch["label"].to(device, non_blocking=True)
            pred = encoding.ids(translate(generator, batch["photo"].to(device, non_blocking=True), tile))
            if pred.shape[-2:] != label.shape[-2:]:
                pred = F.interpolate(pred[:, None].float(), size=label.shape[-2:], mode="nearest-exact")[:, 0].long()
            total += confusion_matrix(pred, label)
    return total


def evaluate_segmentation(
    generator: nn.Module,
    batches: Iterable[dict],
    device: torch.device | str,
    encoding: SegEncoding | None = None,
    tile: int = 0,
) -> dict[str, Any]:
    """photo -> seg scores of ``generator`` (a real2seg generator) on ``batches``; see ``segmentation_scores``."""
    return segmentation_scores(accumulate_confusion(generator, batches, device, encoding, tile))


def tracker_metrics(scores: dict[str, Any], prefix: str = "eval/") -> dict[str, float]:
    """Flat scalars for W&B and the like: the three means plus ``iou/<class>`` per present class."""
    flat = {f"{prefix}{k}": scores[k] for k in ("pixel_acc", "mean_class_acc", "mean_iou", "classes_present")}
    for name, iou in zip(CLASS_NAMES, scores["per_class_iou"], strict=True):
        if not math.isnan(iou):
            flat[f"{prefix}iou/{name}"] = iou
    return flat


# --- FID -----------------------------------------------------------------------------------------


def load_fid(weights_path: str | Path, device: torch.device | str) -> FrechetInceptionDistance:
    """torchmetrics' FID on the 2048-d pool features of the original FID Inception, from a local file.

    The file is read with ``weights_only=True`` (tensors only) and handed over as an
    in-memory copy saved from those tensors, because torch-fidelity's own loader may
    unpickle arbitrary objects. ``antialias=False`` keeps torch-fidelity's TF1-compatible
    resize, so scores compare with pytorch-fid and the original TTUR code.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    weights_path = Path(weights_path)
    state = load_trusted(weights_path, "cpu")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights_path}: not a state dict of tensors (expected {INCEPTION_FILE})")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=buffer, antialias=False)
    except RuntimeError as e:  # load_state_dict: missing/unexpected keys or shapes
        reason = str(e).strip().splitlines()[0][:160]
        raise CheckpointError(f"{weights_path}: not the FID Inception weights ({reason})") from None
    return fid.to(device)


def accumulate_photo_errors(
    generator: nn.Module,
    batches: Iterable[dict],
    device: torch.device | str,
    encoding: SegEncoding | None = None,
    fid: FrechetInceptionDistance | None = None,
    tile: int = 0,
) -> torch.Tensor:
    """seg -> photo: ``[sum of L1, sum of PSNR (dB), images]`` on ``device``, each translated map
    compared with its own photo on the [0, 1] scale. Each batch has ``photo`` and ``label``; the
    maps are made from ``label`` in ``encoding``. Updates ``fid`` too when given (reset it first).
    Under data parallelism all-reduce (sum) this before ``photo_scores``."""
    encoding = encoding or RgbEncoding()
    total = torch.zeros(3, dtype=torch.float64, device=device)
    with evaluating(generator):
        for batch in batches:
            real = (batch["photo"].to(device, non_blocking=True).float() + 1) / 2
            maps = encoding.from_ids(batch["label"].to(device, non_blocking=True))
            fake = ((translate(generator, maps, tile).float() + 1) / 2).clamp(0, 1)
            l1 = (fake - real).abs().flatten(1).mean(1)
            mse = (fake - real).square().flatten(1).mean(1)
            psnr = -10 * torch.log10(mse.clamp(min=1e-10))  # peak 1; an exact copy scores 100 dB
            total += torch.stack([l1.sum(), psnr.sum(), torch.tensor(float(len(l1)), device=device)]).double()
            if fid is not None:
                fid.update(to_uint8(fake * 2 - 1), real=False)
                fid.update(to_uint8(real * 2 - 1), real=True)
    return total


def photo_scores(errors: torch.Tensor) -> dict[str, float]:
    """Mean L1 and PSNR from an ``accumulate_photo_errors`` sum."""
    l1, psnr, images = errors.tolist()
    return {"photo_l1": l1 / images if images else math.nan, "photo_psnr": psnr / images if images else math.nan}


def fid_score(fid: FrechetInceptionDistance) -> float:
    """FID of what ``accumulate_photo_errors`` fed ``fid`` (torchmetrics sums over processes here)."""
    if fid.real_features_num_samples < 2:
        raise ValueError(f"FID needs at least 2 images, got {int(fid.real_features_num_samples)}")
    return fid.compute().item()


def evaluate_photos(
    generator: nn.Module,
    batches: Iterable[dict],
    device: torch.device | str,
    encoding: SegEncoding | None = None,
    fid: FrechetInceptionDistance | None = None,
    tile: int = 0,
) -> dict[str, float]:
    """seg -> photo scores of ``generator`` (a seg2real generator): ``photo_l1``, ``photo_psnr`` and,
    with ``fid`` (from ``load_fid``), ``fid``."""
    if fid is not None:
        fid.reset()
    scores = photo_scores(accumulate_photo_errors(generator, batches, device, encoding, fid, tile))
    if fid is not None:
        scores["fid"] = fid_score(fid)
    return scores


# --- command line --------------------------------------------------------------------------------


def shard_batches(pattern: str | list[str], limit: int | None, keys: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Full-resolution batches of one image from cyclegan-shard tars (a brace pattern or a list), in shard order.

    Yields ``photo`` (1 x 3 x H x W in [-1, 1]) and ``label`` (1 x H x W int64), the
    training batch contract; appends each sample's key to ``keys``.
    """
    import webdataset as wds  # here, so training (which imports this module) runs where it is not installed

    for sample in wds.WebDataset(pattern, shardshuffle=False, empty_check=False):
        where = f"{sample['__url__']}: {sample['__key__']}"
        if PHOTO not in sample or LABEL not in sample:
            raise InputError(f"{where}: sample lacks .{PHOTO} or .{LABEL}")
        try:
            photo = np.array(Image.open(io.BytesIO(sample[PHOTO])).convert("RGB"))
            label = np.array(Image.open(io.BytesIO(sample[LABEL])))
        except OSError as e:
            raise InputError(f"{where}: cannot decode ({e})") from None
        if label.ndim != 2 or label.max() > NUM_CLASSES:
            raise InputError(f"{where}: label.png must be one channel of class ids 0..{NUM_CLASSES}")
        keys.append(sample["__key__"])
        yield {
            "photo": from_uint8(torch.from_numpy(photo).permute(2, 0, 1))[None],
            "label": torch.from_numpy(label.astype(np.int64))[None],
        }
        if limit is not None and len(keys) >= limit:
            return


def format_table(report: dict[str, Any]) -> str:
    """Per-class rows for the classes present, then the three means."""
    lines = [f"{'id':>4}  {'class':<28}{'IoU':>7}{'acc':>7}{'pixels':>12}"]
    for k, name in enumerate(CLASS_NAMES, start=1):
        if report["gt_pixels"][k - 1]:
            iou, acc = report["per_class_iou"][k - 1], report["per_class_acc"][k - 1]
            lines.append(f"{k:>4}  {name[:27]:<28}{iou:>7.3f}{acc:>7.3f}{report['gt_pixels'][k - 1]:>12}")
    present = f"(means over the {report['classes_present']}/{NUM_CLASSES} classes present in the ground truth)"
    lines += [
        "",
        f"pixel accuracy       {report['pixel_acc']:.4f}",
        f"mean class accuracy  {report['mean_class_acc']:.4f}  {present}",
        f"mean IoU             {report['mean_iou']:.4f}",
    ]
    return "\n".join(lines)


def without_nan(value: Any) -> Any:
    """NaN -> None throughout, so the JSON report is strict JSON (null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    return value


def build_parser() -> argparse.ArgumentParser:
    from cyclegan.protocol import REFERENCE_SEGMENTER  # here: the protocol module imports this one

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--generator", required=True, type=Path, action="append",
                        help="real2seg_gen_N.pt or seg2real_gen_N.pt; with --protocol, one or one of each")  # fmt: skip
    parser.add_argument("--protocol", choices=["ade20k"],
                        help="ade20k: the published table (photo -> labels; labels -> photo read by --segmenter, "
                        "with FID and KID; the segmenter on the real photos), everything at 256x256 "
                        "(default: none: one generator's scores at full resolution, as described above)")  # fmt: skip
    parser.add_argument("--segmenter", metavar="ID_OR_DIR",
                        help="with --protocol: an ADE20K-150 semantic segmentation model for transformers, a "
                        "hub id or a save_pretrained folder (default: none; the README uses "
                        f"{REFERENCE_SEGMENTER})")  # fmt: skip
    parser.add_argument("--shards", required=True, metavar="DIR|PATTERN",
                        help="the folder cyclegan-shard wrote (as for cyclegan-train), or a tar path or brace pattern "
                        "such as 'DIR/validation-{000000..000003}.tar'")  # fmt: skip
    parser.add_argument("--split", help="split of the folder's manifest to score (default: validation)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images (default: all)")
    parser.add_argument("--json", type=Path, help="also write the report here (default: print only)")
    parser.add_argument("--inception-weights", type=Path,
                        help=f"{INCEPTION_FILE}: seg2real also scored by FID, and by KID with --protocol "
                        "(default: L1 and PSNR only)")  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--tile", type=int, default=0, metavar="N",
                        help="run the generator in exact N x N-pixel tiles (a multiple of 4; same scores, "
                        "memory bounded by the tile); 0: whole images (default); not with --protocol")  # fmt: skip
    return parser


def shard_source(shards: str, split: str | None) -> str | list[str]:
    """``--shards`` as webdataset URLs: a folder's tars of ``split`` from its manifest, else the pattern."""
    if Path(shards).is_dir():
        try:
            return [str(tar) for tar in read_split(shards, split or "validation").tars]
        except LoaderError as e:
            raise InputError(str(e)) from None
    if split is not None:
        raise InputError(f"--split {split}: only with a shard folder, not a tar path or pattern ({shards})")
    return shards


@contextmanager
def reading_shards(shards: str) -> Iterator[None]:
    """Errors of reading the shards, and scores that cannot be computed, as one-line ``InputError``s."""
    try:
        yield
    except InputError:
        raise
    except (OSError, tarfile.TarError) as e:  # webdataset appends the shard's name to the arguments
        where = getattr(e, "filename", None) or shards
        detail = getattr(e, "strerror", None) or (e.args[0] if e.args else type(e).__name__)
        raise InputError(f"{where}: cannot read the shards ({detail})") from None
    except ValueError as e:  # ids out of range, FID or KID of fewer than two images
        raise InputError(f"{shards}: {e}") from None


def split_of(args: argparse.Namespace) -> tuple[str | list[str], str | None, str]:
    """The shards to read, the split's name (None for a pattern) and how to name them to the user."""
    source = shard_source(args.shards, args.split)
    split = (args.split or "validation") if isinstance(source, list) else None
    return source, split, f"{args.shards} (split {split})" if split else args.shards


def run(args: argparse.Namespace) -> int:
    """Score the generator on the shards, print the report, optionally save it as JSON."""
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit: must be >= 1, got {args.limit}")
    if args.tile < 0 or args.tile % TILE_MULTIPLE or (args.tile and args.protocol is not None):
        raise InputError(f"--tile {args.tile}: must be 0 or a positive multiple of {TILE_MULTIPLE}, without --protocol")
    if args.protocol is not None:
        return run_protocol(args)
    if args.segmenter is not None:
        raise InputError(f"--segmenter {args.segmenter}: only with --protocol ade20k, whose table it reads photos for")
    if len(args.generator) > 1:
        raise InputError(f"--generator: one file without --protocol, got {len(args.generator)} "
                         "(--protocol ade20k scores a real2seg and a seg2real file together)")  # fmt: skip
    source, split, described = split_of(args)
    device = pick_device(args.device)
    path = args.generator[0]
    generator, meta, encoding = load_generator(path, device)
    fid = None
    photos = meta["role"] == "seg2real"
    if photos and args.inception_weights is not None:
        fid = load_fid(args.inception_weights, device)
    elif photos:
        print(f"{PROG}: note: seg2real is scored by L1 and PSNR here; it is also {INCEPTION_HELP}", file=sys.stderr)
    keys: list[str] = []
    batches = shard_batches(source, args.limit, keys)
    with reading_shards(args.shards):
        if photos:  # each real label map, in the generator's encoding, against its own photo
            scores = evaluate_photos(generator, batches, device, encoding, fid, args.tile)
        else:
            scores = evaluate_segmentation(generator, batches, device, encoding, args.tile)
    if not keys:
        raise InputError(f"{described}: no samples in the shards")
    report = {
        "generator": str(path),
        "role": meta["role"],
        "seg_mode": encoding.mode,
        "epoch": meta["epoch"],
        "shards": args.shards,
        "split": split,
        "images": len(keys),
        **scores,
    }
    print(f"{PROG}: {path} ({meta['role']}, {encoding.mode} mode, epoch {meta['epoch']}) "
          f"on {len(keys)} image(s) of {described}")  # fmt: skip
    if not photos:
        report["class_names"] = list(CLASS_NAMES)
        print(format_table(report))
    else:
        print(f"L1 {report['photo_l1']:.4f}  PSNR {report['photo_psnr']:.2f} dB  (vs the paired photo, [0, 1] scale)")
    if fid is not None:
        report["inception_weights"] = str(args.inception_weights)
        print(f"FID {report['fid']:.3f}  (translated vs real photos; biased upward for small image counts)")
    write_report(report, args.json)
    return 0


def write_report(report: dict[str, Any], path: Path | None) -> None:
    """The report as strict JSON (NaN as null) at ``path``, when one was given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(without_nan(report), indent=2, allow_nan=False) + "\n")


ROW_TITLES = {
    "real2seg": "photo -> labels (G)",
    "seg2real": "labels -> photo (F), read by the segmenter",
    "ground_truth": "ground truth (real photos, read by the segmenter)",
}


def format_protocol_table(rows: dict[str, dict[str, Any]]) -> str:
    """The published table's columns, one line per row scored; accuracies and mIoU in percent."""
    lines = [f"{'':<50}{'pixel acc':>10}{'class acc':>10}{'mIoU':>8}{'FID':>9}  KID"]
    for row, scores in rows.items():
        fid = f"{scores['fid']:.2f}" if "fid" in scores else "-"
        kid = f"{scores['kid_mean']:.4f} +/- {scores['kid_std']:.4f}" if "kid_mean" in scores else "-"
        lines.append(f"{ROW_TITLES[row]:<50}{100 * scores['pixel_acc']:>10.2f}{100 * scores['mean_class_acc']:>10.2f}"
                     f"{100 * scores['mean_iou']:>8.2f}{fid:>9}  {kid}")  # fmt: skip
    present = next(iter(rows.values()))["classes_present"]
    lines.append(f"(accuracies and mIoU in %; class means over the {present}/{NUM_CLASSES} classes present in the "
                 "ground truth; KID mean +/- std over its subsets)")  # fmt: skip
    return "\n".join(lines)


def run_protocol(args: argparse.Namespace) -> int:
    """``--protocol ade20k``: the rows the given generators allow (see :mod:`cyclegan.protocol`), printed
    as the published table and saved as JSON with the protocol itself."""
    from cyclegan import protocol

    if args.segmenter is None:
        raise InputError(f"--protocol {args.protocol}: needs --segmenter ID_OR_DIR, the ADE20K segmenter that reads "
                         f"the photos ({protocol.REFERENCE_SEGMENTER}, or a folder save_pretrained wrote)")  # fmt: skip
    if len(args.generator) > 2:
        raise InputError(f"--generator: at most one real2seg and one seg2real file, got {len(args.generator)}")
    source, split, described = split_of(args)
    device = pick_device(args.device)
    loaded: dict[str, tuple[Path, nn.Module, dict[str, Any], SegEncoding]] = {}
    for path in args.generator:
        generator, meta, encoding = load_generator(path, device)
        if meta["role"] in loaded:
            raise InputError(f"{path}: a second {meta['role']} generator (after {loaded[meta['role']][0]}); "
                             "give one real2seg and one seg2real file")  # fmt: skip
        loaded[meta["role"]] = (path, generator, meta, encoding)
    segmenter = protocol.load_segmenter(args.segmenter, device)
    fid = kid = None
    if "seg2real" in loaded and args.inception_weights is not None:
        fid = load_fid(args.inception_weights, device)
        kid = protocol.make_kid(fid.inception).to(device)
    elif "seg2real" in loaded:
        print(f"{PROG}: note: FID and KID left out: labels -> photo is {INCEPTION_HELP}", file=sys.stderr)
    pairs = {role: (generator, encoding) for role, (_, generator, _, encoding) in loaded.items()}
    keys: list[str] = []
    with reading_shards(args.shards):
        totals = protocol.accumulate_rows(shard_batches(source, args.limit, keys), device, segmenter,
                                          pairs.get("real2seg"), pairs.get("seg2real"), fid=fid, kid=kid)  # fmt: skip
        if not keys:
            raise InputError(f"{described}: no samples in the shards")
        rows = protocol.row_scores(totals, fid, kid)
    weights = str(args.inception_weights) if fid is not None else None
    report = {
        "protocol": protocol.describe(segmenter, len(keys), weights, rows.get("seg2real", {}).get("kid_subset_size")),
        "shards": args.shards,
        "split": split,
        "images": len(keys),
        "generators": {role: {"file": str(path), "seg_mode": encoding.mode, "epoch": meta["epoch"]}
                       for role, (path, _, meta, encoding) in loaded.items()},  # fmt: skip
        "rows": rows,
        "class_names": list(CLASS_NAMES),
    }
    print(f"{PROG}: ADE20K protocol on {len(keys)} image(s) of {described} at {protocol.SIDE}x{protocol.SIDE}, "
          f"segmenter {args.segmenter}")  # fmt: skip
    for role, (path, _, meta, encoding) in loaded.items():
        print(f"  {role}: {path} ({encoding.mode} mode, epoch {meta['epoch']})")
    print(format_protocol_table(rows))
    write_report(report, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns 0, or 2 after a one-line error."""
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv), (InputError, CheckpointError))


if __name__ == "__main__":
    raise SystemExit(main())
