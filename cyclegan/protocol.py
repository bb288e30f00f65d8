"""The ADE20K protocol of label <-> photo translation papers: ``cyclegan-eval --protocol ade20k``.

Semantic image synthesis papers (SPADE, OASIS, USIS, ...) score labels -> photo on ADE20K by letting a
pretrained ADE20K segmentation network read the generated photos and scoring its prediction against the
input label map (mIoU, pixel accuracy: the CycleGAN paper's "FCN-score"), next to FID between generated
and real photos, and print the same segmenter on the real photos as the upper bound. This module pins
that protocol so that every number of its table is measured on the same pixels:

* **Resolution.** Every photo and label map is brought to 256 x 256 (``SIDE``; the ADE20K tables' images):
  the short side is resized to 256 (the long side to ``round(long * 256 / short)``), photos bilinearly
  with antialiasing and rounded back to uint8, label maps by nearest neighbour (``nearest-exact``), then
  the centre 256 x 256 is cropped (offsets ``(size - 256) // 2``). Real photos and label maps follow
  the same rule, so they stay aligned; G reads the 256 x 256 photo, F translates the 256 x 256 map, and
  F's photos are rounded to uint8, as a saved PNG would be.
* **Segmenter.** A transformers ``AutoModelForSemanticSegmentation`` checkpoint (hub id or local folder)
  whose ``config.id2label`` is the 150 ADE20K classes in their order (names compared after stripping
  white space: the official checkpoints spell class 7 "bed "). Its class k is our id k + 1 (its 0,
  wall, is our 1); it never predicts our 0 (unlabeled). It reads the 256 x 256 uint8 photo in float32,
  scaled and normalised as its ``preprocessor_config.json`` says (``rescale_factor``, ``image_mean``,
  ``image_std``), or by 1/255 and ImageNet's mean and std where there is none; its logits (SegFormer's
  come at 1/4 of the input) are upsampled bilinearly to 256 x 256 before the argmax.
* **Scores.** ``evaluate.confusion_matrix``: ground-truth pixels labelled 0 are not scored; means over
  the classes present in the ground truth. FID is ``evaluate.load_fid``'s (torchmetrics, the original
  FID Inception weights from a local file); KID is torchmetrics' on the same Inception network, with a
  fixed seed for its subset draws. Both photo sets reach the Inception network the same way: 256 x 256
  uint8 images, resized to 299 inside it.

transformers is imported only by ``load_segmenter`` (``pip install -e ".[eval]"``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from cyclegan.evaluate import NUM_IDS, confusion_matrix, evaluating, fid_score, segmentation_scores
from cyclegan.inference import InputError, from_uint8, to_uint8, translate
from cyclegan.palette import CLASS_NAMES, NUM_CLASSES
from cyclegan.seg_encoding import SegEncoding

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

SIDE = 256
REFERENCE_SEGMENTER = "openmmlab/upernet-convnext-small"
"""The segmenter the README's commands use: an UperNet (the decoder family of the segmenter the ADE20K tables
used) on a ConvNeXt-S backbone (mmsegmentation's 512 x 512 ADE20K checkpoint, converted)."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
"""torchmetrics' defaults; the subset size is lowered to the number of images where there are fewer."""
KID_SEED = 0
RESIZE_RULE = (
    f"short side to {SIDE} px (long side round(long * {SIDE} / short)): photos bilinear with antialias, rounded "
    f"to uint8; label maps nearest-exact; then the centre {SIDE}x{SIDE} crop (offsets (size - {SIDE}) // 2). "
    f"G reads the {SIDE}x{SIDE} photo, F translates the {SIDE}x{SIDE} map and its photo is rounded to uint8"
)
ROWS = ("real2seg", "seg2real", "ground_truth")
PACKAGES = ("torch", "torchvision", "transformers", "torchmetrics", "torch-fidelity", "cyclegan-ade20k")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


# --- the resolution ------------------------------------------------------------------------------


def protocol_shape(height: int, width: int) -> tuple[int, int]:
    """The size an image of ``height`` x ``width`` is resized to before its centre crop: short side ``SIDE``."""
    short = min(height, width)
    return round(height * SIDE / short), round(width * SIDE / short)


def _centre_crop(images: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    top, left = (height - SIDE) // 2, (width - SIDE) // 2
    return images[..., top : top + SIDE, left : left + SIDE]


def resize_photos(photos: torch.Tensor) -> torch.Tensor:
    """uint8 photos (B, 3, H, W) -> (B, 3, 256, 256) uint8 by the protocol's rule (see the module's doc)."""
    size = protocol_shape(*photos.shape[-2:])
    if size != tuple(photos.shape[-2:]):
        resized = F.interpolate(photos.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        photos = resized.round().clamp(0, 255).to(torch.uint8)
    return _centre_crop(photos)


def resize_labels(labels: torch.Tensor) -> torch.Tensor:
    """Class ids (B, H, W) -> (B, 256, 256) int64 by the protocol's rule: nearest neighbour, centre crop."""
    size = protocol_shape(*labels.shape[-2:])
    if size != tuple(labels.shape[-2:]):
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0]
    return _centre_crop(labels.long())


# --- the segmenter -------------------------------------------------------------------------------


class Segmenter(nn.Module):
    """A transformers ADE20K-150 segmentation model that reads uint8 photos and answers in our class ids."""

    def __init__(self, model: nn.Module, record: dict[str, Any], scale: float,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:  # fmt: skip
        super().__init__()
        self.model, self.record = model.float().eval(), record
        self.scale = scale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, photos: torch.Tensor) -> torch.Tensor:
        """uint8 photos (B, 3, H, W) -> ids (B, H, W) in 1..150: its class k is our k + 1."""
        pixels = (photos.float() * self.scale - self.mean) / self.std
        logits = self.model(pixel_values=pixels).logits
        if logits.shape[-2:] != photos.shape[-2:]:
            logits = F.interpolate(logits, size=photos.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1) + 1


def check_classes(name: str, id2label: dict[Any, str]) -> None:
    """Refuse, in one line naming the first difference, labels that are not the 150 ADE20K classes in order."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    count = f" ({len(labels)} classes, not {NUM_CLASSES})" if len(labels) != NUM_CLASSES else ""
    for k, ours in enumerate(CLASS_NAMES):
        theirs = labels.get(k)
        if theirs is None or theirs.strip() != ours:
            found = "missing" if theirs is None else repr(theirs)
            raise InputError(f"{name}: not an ADE20K-150 segmenter: its class {k} is {found}, ADE20K's class {k} "
                             f"is {ours!r}{count}")  # fmt: skip
    if count:
        raise InputError(f"{name}: not an ADE20K-150 segmenter: it has classes beyond ADE20K's 150{count}")


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """transformers' and the hub's logs, warnings and loading bars off, so that a refusal is one line.
    Nothing they would have said is lost: a checkpoint short of weights is refused by ``load_segmenter``."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as tf_logging

    levels, bars = (tf_logging.get_verbosity(), hub_logging.get_verbosity()), tf_logging.is_progress_bar_enabled()
    tf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tf_logging.set_verbosity(levels[0])
        hub_logging.set_verbosity(levels[1])
        if bars:
            tf_logging.enable_progress_bar()


def _unloadable(name: str, local: bool, error: BaseException) -> InputError:
    """transformers' refusal of ``name`` (its first line) as the user's error; offline hub ids say what to do."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    if local:
        return InputError(f"{name}: not a semantic segmentation model transformers can load ({reason})")
    return InputError(f"{name}: no such folder, and cannot load it from the Hugging Face hub ({reason}); where the "
                      "hub cannot be reached, save the model to a folder elsewhere (save_pretrained) and pass that "
                      "folder")  # fmt: skip


def load_segmenter(name: str, device: torch.device | str) -> Segmenter:
    """The segmenter ``name`` (a hub id or a folder ``save_pretrained`` wrote) on ``device``, its classes
    checked before its weights are read. Raises ``InputError`` in one line."""
    try:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation
    except ImportError:
        raise InputError(f"{name}: the segmenter is read with transformers, which is not installed: "
                         'pip install -e ".[eval]"') from None  # fmt: skip
    folder = Path(name).expanduser()
    local = folder.is_dir()
    if folder.exists() and not local:
        raise InputError(f"{name}: a file; the segmenter is a folder save_pretrained wrote, or a hub id")
    if not local and not _HUB_ID.fullmatch(name):
        raise InputError(f"{name}: no such folder")
    if local and not (folder / "config.json").is_file():  # some transformers versions load defaults from nothing
        raise InputError(f"{name}: not a semantic segmentation model transformers can load (no config.json: "
                         "pass a folder save_pretrained wrote)")  # fmt: skip
    source = str(folder) if local else name
    with _quiet_hub():
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError, KeyError) as e:
            raise _unloadable(name, local, e) from None
        check_classes(name, config.id2label)
        try:
            model, info = AutoModelForSemanticSegmentation.from_pretrained(source, config=config,
                                                                           output_loading_info=True)  # fmt: skip
        except (OSError, ValueError, KeyError) as e:
            raise _unloadable(name, local, e) from None
        absent = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
        if absent:
            raise InputError(f"{name}: the checkpoint lacks {len(absent)} of the model's weights or holds them in "
                             f"another shape (e.g. {absent[0]}); they would be random")  # fmt: skip
        try:
            processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError, KeyError):  # no preprocessor_config.json
            processor = None
    scale, mean, std = 1 / 255, IMAGENET_MEAN, IMAGENET_STD
    if processor is not None:
        scale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
        if getattr(processor, "do_normalize", True):
            mean, std = tuple(map(float, processor.image_mean)), tuple(map(float, processor.image_std))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    record = {
        "name": name,
        "source": "local folder" if local else "hub id",
        "revision": getattr(config, "_commit_hash", None),
        "model_type": config.model_type,
        "architecture": type(model).__name__,
        "class_mapping": "segmenter class k -> ADE20K id k + 1 (its 0, wall, is our 1); its id2label checked against "
        "the 150 ADE20K names after stripping white space; it never predicts 0 (unlabeled)",
        "input": f"the {SIDE}x{SIDE} uint8 photo x in float32 as (x * rescale - mean) / std",
        "normalisation": {"rescale": scale, "mean": list(mean), "std": list(std),
                          "from": "preprocessor_config.json" if processor is not None
                          else "ImageNet's (no preprocessor_config.json)"},  # fmt: skip
        "logits": f"upsampled bilinearly (align_corners false) to {SIDE}x{SIDE} where smaller, then the argmax",
    }
    return Segmenter(model, record, scale, mean, std).to(device)


# --- the rows ------------------------------------------------------------------------------------


def to_protocol(batch: dict[str, torch.Tensor], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the training contract (``photo`` in [-1, 1], ``label`` ids) as the protocol's
    256 x 256 uint8 photos and int64 label maps on ``device``."""
    photos = resize_photos(to_uint8(batch["photo"].to(device, non_blocking=True)))
    return photos, resize_labels(batch["label"].to(device, non_blocking=True))


def accumulate_rows(
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device | str,
    segmenter: Segmenter,
    real2seg: tuple[nn.Module, SegEncoding] | None = None,
    seg2real: tuple[nn.Module, SegEncoding] | None = None,
    ground_truth: bool = True,
    fid: FrechetInceptionDistance | None = None,
    kid: KernelInceptionDistance | None = None,
) -> dict[str, torch.Tensor]:
    """One pass over ``batches`` (each image decoded once for all rows): the ``confusion_matrix`` sum of
    each row asked for, by name (``ROWS``), on ``device``. Generators come with their encodings. ``fid``
    and ``kid`` (reset) get F's photos as fake and the real photos as real. Under data parallelism
    all-reduce (sum) the matrices before ``segmentation_scores``."""
    totals = {row: torch.zeros(NUM_IDS, NUM_IDS, dtype=torch.long, device=device)
              for row, wanted in zip(ROWS, (real2seg, seg2real, ground_truth), strict=True) if wanted}  # fmt: skip
    with ExitStack() as stack:
        for generator, _ in filter(None, (real2seg, seg2real)):
            stack.enter_context(evaluating(generator))
        for batch in batches:
            photos, labels = to_protocol(batch, device)
            if real2seg is not None:
                generator, encoding = real2seg
                totals["real2seg"] += confusion_matrix(encoding.ids(translate(generator, from_uint8(photos))), labels)
            if seg2real is not None:
                generator, encoding = seg2real
                fakes = to_uint8(translate(generator, encoding.from_ids(labels)))
                totals["seg2real"] += confusion_matrix(segmenter(fakes), labels)
                for metric in filter(None, (fid, kid)):
                    metric.update(fakes, real=False)
                    metric.update(photos, real=True)
            if ground_truth:
                totals["ground_truth"] += confusion_matrix(segmenter(photos), labels)
    return totals


# --- FID and KID ---------------------------------------------------------------------------------


def make_kid(inception: nn.Module) -> KernelInceptionDistance:
    """torchmetrics' KID on an already built feature network (``load_fid(...).inception``: the FID
    Inception read from its local file; an int feature size would make torchmetrics download one)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():  # that it keeps every feature: 2 x 2000 x 2048 floats on ADE20K
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        return KernelInceptionDistance(feature=inception, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE)


def kid_score(kid: KernelInceptionDistance) -> dict[str, float | int]:
    """KID mean and std over ``KID_SUBSETS`` subsets of min(``KID_SUBSET_SIZE``, images) images, the
    subset draws seeded with ``KID_SEED`` (torchmetrics draws them from the global CPU generator, whose
    state is restored afterwards)."""
    images = min(sum(len(f) for f in kid.real_features), sum(len(f) for f in kid.fake_features))
    if images < 2:
        raise ValueError(f"KID needs at least 2 images, got {images}")
    kid.subset_size = min(KID_SUBSET_SIZE, images)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(KID_SEED)
        mean, std = kid.compute()
    return {"kid_mean": mean.item(), "kid_std": std.item(), "kid_subset_size": kid.subset_size}


def row_scores(totals: dict[str, torch.Tensor], fid: FrechetInceptionDistance | None = None,
               kid: KernelInceptionDistance | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``segmentation_scores`` of each row; the seg2real row also gets ``fid`` and KID when given."""
    rows = {row: segmentation_scores(confusion) for row, confusion in totals.items()}
    if "seg2real" in rows and fid is not None:
        rows["seg2real"]["fid"] = fid_score(fid)
    if "seg2real" in rows and kid is not None:
        rows["seg2real"].update(kid_score(kid))
    return rows


def describe(segmenter: Segmenter, images: int, inception_weights: str | None,
             kid_subset_size: int | None) -> dict[str, Any]:  # fmt: skip
    """The protocol as run, for the JSON report: what a reader needs to compare or reproduce it."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "name": "ade20k",
        "resolution": [SIDE, SIDE],
        "resize": RESIZE_RULE,
        "segmenter": segmenter.record,
        "ignore": "ground-truth pixels labelled 0 (unlabeled) are not scored; class means are over the classes "
        "present in the ground truth",
        "images": images,
        "fid": None if inception_weights is None else {
            "implementation": "torchmetrics FrechetInceptionDistance (feature 2048, antialias false)",
            "inception_weights": inception_weights,
            "input": f"{SIDE}x{SIDE} uint8 photos, resized to 299x299 inside the Inception network",
        },
        "kid": None if kid_subset_size is None else {
            "implementation": "torchmetrics KernelInceptionDistance on the FID's Inception network",
            "subsets": KID_SUBSETS, "subset_size": kid_subset_size,
            "subset_size_rule": f"min({KID_SUBSET_SIZE}, images)", "seed": KID_SEED,
            "kernel": "polynomial, degree 3, gamma 1 / 2048, coef 1 (torchmetrics' defaults)",
        },
        "versions": versions,
    }  # fmt: skip
