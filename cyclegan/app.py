"""Try exported generators in the browser: a Gradio app with a tab for each direction.

    pip install -e ".[app]"
    cyclegan-app --real2seg runs/x/real2seg_gen_200.pt --seg2real runs/x/seg2real_gen_200.pt
    cyclegan-app --seg2real seg2real.onnx --port 7861 --device cuda
    python -m cyclegan.app --real2seg a.pt --seg2real b.onnx --bench 256,512   # latency, no server

Either generator may be a ``*_gen_N.pt`` export or an ``.onnx`` file from ``cyclegan-export``; the
direction and segmentation mode are read from the file, as ``cyclegan-generate`` does, and a tab whose
generator was not given says so. Without flags the generators come from ``CYCLEGAN_REAL2SEG`` /
``CYCLEGAN_SEG2REAL``, else from the current folder (the newest ``real2seg_gen_N.pt``, else
``real2seg.onnx``; the same for seg2real), so this module also serves as a Hugging Face Space's app.

* "Photo → labels": upload a photo; the map in the ADE20K display palette, an overlay with adjustable
  opacity, a legend of the classes present with their pixel shares, and the map to download as an id
  PNG and a colour PNG (display palette: ``cyclegan-generate --palette ade150``'s two files).
* "Labels → photo": paint with ADE20K classes (a searchable class picker sets the brush colour; brush
  size, eraser, click-to-fill on the decoded map), starting from a blank canvas, the photo tab's
  prediction or an uploaded map in any encoding ``cyclegan-generate`` reads; the photo follows each
  change. The canvas is painted in the training palette (colours >= 51 apart) and decoded by an alpha
  threshold and the nearest colour; the display palette cannot be decoded (road and skyscraper share one).
* Named API endpoints ``/photo_to_labels`` (a photo file in; the id PNG and the colour PNG out) and
  ``/labels_to_photo`` (a map file in; the photo PNG out) for ``gradio_client``; every other event is
  private. Their outputs equal ``cyclegan-generate --own-size``'s for the same file (``--palette ade150``
  for the photo tab's colour PNG), or ``--width/--height``'s with those flags.

Safe by default: it listens on 127.0.0.1 (0.0.0.0 inside a Space) unless ``--host`` says otherwise;
uploads above ``--max-pixels`` or ``--max-mb`` are refused in one line before their pixels are decoded;
it serves only its own temporary outputs; requests run one at a time on the model, at most
``--queue-size`` waiting. Bad input is one line in the page, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import html
import os
import re
import shutil
import statistics
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from cyclegan.arguments import HelpFormatter, positive_int, run_reporting_errors
from cyclegan.checkpoint import CheckpointError
from cyclegan.generate import PALETTES, check_mode, open_image, pad_to_4, read_input, resize, round_to_4
from cyclegan.inference import InputError, load_translator, pick_device
from cyclegan.label_maps import _ADE150, DEFAULT_MAX_UNKNOWN, DEFAULT_TOLERANCE, snap_colours
from cyclegan.palette import CLASS_NAMES, DISPLAY_PALETTE, NUM_CLASSES, TRAIN_PALETTE, rgb_to_ids
from cyclegan.seg_encoding import mode_of_export

PROG = "cyclegan-app"
ROLES = {"real2seg": "photo", "seg2real": "seg"}
"""Generator role -> the domain it reads."""
ALPHA_THRESHOLD = 128
"""A painted pixel counts when its alpha is at least this: antialiased stroke edges go one way or the other."""
DEFAULT_CANVAS = 256
HEIGHT = 360
"""Display height of the pictures, in CSS pixels."""
OUTPUT_MAX_AGE_S = 3600
"""Per-request output folders older than this are deleted at the next request."""
CLASS_CHOICES = ["0 unlabeled", *(f"{i} {name}" for i, name in enumerate(CLASS_NAMES, start=1))]
_TRAIN = TRAIN_PALETTE.numpy()
_DISPLAY = DISPLAY_PALETTE.numpy()


@dataclass(frozen=True)
class Limits:
    """What one request may cost: checked on the file, before any pixel is decoded."""

    max_pixels: int = 2048 * 2048
    """Width x height of an upload."""
    max_bytes: int = 20 << 20
    """Size of an uploaded file (Gradio also refuses larger bodies before they reach the app)."""
    queue_size: int = 16
    """Requests waiting for the model at once; more are turned away with "queue full"."""

    def check(self, path: Path, name: str) -> None:
        """Refuse ``path`` (shown as ``name``) when too large, from its size and image header alone."""
        size = path.stat().st_size
        if size > self.max_bytes:
            raise InputError(f"{name}: {size / 2**20:.1f} MB is over this app's limit of {self.max_bytes / 2**20:g} MB")
        with open_image(path) as image:  # the header only
            width, height = image.size
        if width * height > self.max_pixels:
            raise InputError(f"{name}: {width}x{height} is {width * height:,} pixels, over this app's limit of "
                             f"{self.max_pixels:,}")  # fmt: skip


class Model:
    """One loaded generator and how inputs are sized for it (``size`` None: each input at its own size,
    padded to multiples of 4 and cropped back, as ``cyclegan-generate --own-size``; else resized to
    ``size`` = (W, H) and the result resized back, as ``--width/--height``)."""

    def __init__(self, path: Path, role: str, device: torch.device, size: tuple[int, int] | None) -> None:
        self.path, self.size = path, size
        self.run, self.meta = load_translator(path, device)
        if self.meta.get("role") != role:
            raise InputError(f"{path}: is a {self.meta.get('role')} generator, given as --{role}")
        self.domain = ROLES[role]
        self.describe = f"{path.name} ({mode_of_export(self.meta)} mode{', ONNX' if path.suffix == '.onnx' else ''})"

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """A uint8 photo (3, H, W) -> class ids (H, W), or ids (H, W) -> a uint8 photo (3, H, W), at its size."""
        ids = self.domain == "seg"
        height, width = image.shape[-2:]
        if self.size is None:
            return self.run(pad_to_4(image)[None])[0][..., :height, :width]
        output = self.run(resize(image, self.size, ids=ids)[None])[0]
        return resize(output, (width, height), ids=not ids)


class Outputs:
    """The app's own temporary folder: one subfolder per request, pruned after ``OUTPUT_MAX_AGE_S``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cyclegan-app-"))

    def new(self) -> Path:
        now = time.time()
        for old in self.root.iterdir():
            if now - old.stat().st_mtime > OUTPUT_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.root / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def safe_stem(name: str) -> str:
    """A file stem for downloads from an uploaded file's name: letters, digits, ``-``, ``_`` and ``.`` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:64].strip(".") or "image"


def check_palette(name: str, image: Image.Image, rgb: np.ndarray) -> None:
    """Refuse a coloured map drawn in neither the training nor the ADE20K display palette: each palette
    is tried as ``cyclegan-shard`` tries ade150 (at most 1 % of pixels further than 20 from every colour
    present, after snapping and filling), since ``--palette auto`` would read any colours as their nearest."""
    lossy = image.format == "JPEG"
    outside = {}
    for palette, colours in (("ade150", _ADE150), ("train", _TRAIN.astype(np.int64))):
        _, pixels, common = snap_colours(rgb, colours, DEFAULT_TOLERANCE, lossy)
        if pixels.unknown <= DEFAULT_MAX_UNKNOWN * pixels.pixels:
            return
        outside[palette] = (pixels.unknown / pixels.pixels, common)
    share, common = min(outside.values(), key=lambda v: v[0])
    listed = ", ".join(f"({c[0]}, {c[1]}, {c[2]})" for c, _ in common[:3])
    raise InputError(f"{name}: not a label map in the training or the ADE20K display palette: at least {share:.0%} "
                     f"of its pixels are in neither (most common: {listed})")  # fmt: skip


def read_photo(path: Path, name: str, limits: Limits) -> torch.Tensor:
    """An uploaded photo as ``cyclegan-generate`` reads it: uint8 (3, H, W), after the limits and mode checks."""
    limits.check(path, name)
    with open_image(path) as image:
        check_mode(path, image, "photo")
    return read_input(path, "photo")[0]


def read_map(path: Path, name: str, limits: Limits) -> torch.Tensor:
    """An uploaded map as ``cyclegan-generate --palette auto`` reads it (class ids, coloured in either
    palette): int64 ids (H, W), after the limits, mode and palette checks."""
    limits.check(path, name)
    with open_image(path) as image:
        check_mode(path, image, "seg")
        if image.mode == "RGB":
            try:
                image.load()
            except (OSError, Image.DecompressionBombError) as e:
                raise InputError(f"{path}: cannot decode image ({e})") from None
            check_palette(str(path), image, np.asarray(image))
    return read_input(path, "seg", "auto")[0]


def nearest_train(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) colours -> the ids of their nearest training colours (uint8)."""
    flat = torch.from_numpy(np.ascontiguousarray(rgb.reshape(-1, 3).T[:, None, :]))
    return rgb_to_ids(flat)[0].numpy().astype(np.uint8).reshape(rgb.shape[:-1])


def decode_canvas(value: dict[str, Any] | None) -> np.ndarray | None:
    """Class ids (H, W) of the editor's picture (RGBA arrays): its background, then each layer's pixels with
    alpha >= ``ALPHA_THRESHOLD`` painted over it, every colour read as the nearest training colour;
    transparent background is unlabeled."""
    if not value:
        return None
    base = value.get("background")
    if base is None:
        base = value.get("composite")
    if base is None:
        return None
    ids = np.where(base[..., 3] >= ALPHA_THRESHOLD, nearest_train(base[..., :3]), 0).astype(np.uint8)
    for layer in value.get("layers") or []:
        height, width = min(layer.shape[0], ids.shape[0]), min(layer.shape[1], ids.shape[1])
        layer = layer[:height, :width]
        painted = layer[..., 3] >= ALPHA_THRESHOLD
        if painted.any():
            ids[:height, :width][painted] = nearest_train(layer[..., :3][painted])
    return ids


def canvas_value(ids: np.ndarray) -> dict[str, Any]:
    """An editor value whose background is ``ids`` drawn in the training palette, with no layers."""
    rgb = _TRAIN[ids]
    rgba = np.concatenate([rgb, np.full((*ids.shape, 1), 255, np.uint8)], axis=-1)
    return {"background": rgba, "layers": [], "composite": rgba}


def legend_html(ids: np.ndarray) -> str:
    """The classes present, most pixels first: a display-palette swatch, the id and name, the pixel share."""
    counts = np.bincount(ids.ravel(), minlength=NUM_CLASSES + 1)
    rows = []
    for class_id in np.argsort(-counts, kind="stable"):
        if not counts[class_id]:
            break
        r, g, b = _DISPLAY[class_id]
        rows.append(f'<tr><td><span style="display:inline-block;width:1.2em;height:1.2em;border:1px solid #888;'
                    f'background:rgb({r},{g},{b})"></span></td><td>{class_id}</td>'
                    f"<td>{html.escape(CLASS_CHOICES[class_id].split(' ', 1)[1])}</td>"
                    f'<td style="text-align:right">{counts[class_id] / ids.size:.1%}</td></tr>')  # fmt: skip
    head = "<tr><th></th><th>id</th><th>class</th><th>pixels</th></tr>"
    return f'<table class="legend">{head}{"".join(rows)}</table>'


def overlay(photo: np.ndarray, ids: np.ndarray, opacity: float) -> np.ndarray:
    """The display-palette map over the photo (both (H, W, 3) uint8), at ``opacity`` in [0, 1]."""
    mixed = photo.astype(np.float32) * (1 - opacity) + _DISPLAY[ids].astype(np.float32) * opacity
    return mixed.round().clip(0, 255).astype(np.uint8)


def hex_colour(class_id: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*_TRAIN[class_id])


def class_of(choice: str | None) -> int:
    """The id of a class picker entry ("12 person")."""
    try:
        class_id = int(str(choice).split(" ", 1)[0])
    except ValueError:
        raise InputError(f"{choice}: not a class of the list") from None
    if not 0 <= class_id <= NUM_CLASSES:
        raise InputError(f"{choice}: not a class of the list")
    return class_id


class Translators:
    """The app's work, without Gradio: the two generators (either may be None), the limits, the outputs."""

    def __init__(self, models: dict[str, Model | None], limits: Limits) -> None:
        self.models, self.limits, self.outputs = models, limits, Outputs()

    def model(self, role: str) -> Model:
        model = self.models.get(role)
        if model is None:
            raise InputError(f"no {role} generator: start {PROG} with --{role} FILE (.pt or .onnx) to use this")
        return model

    def photo_to_labels(self, path: Path, name: str) -> tuple[np.ndarray, np.ndarray, Path, Path]:
        """The photo (H, W, 3), its class ids (H, W) and their two files: ``<stem>_ids.png`` (8-bit ids)
        and ``<stem>_seg.png`` (display palette)."""
        model = self.model("real2seg")
        photo = read_photo(path, name, self.limits)
        ids = model(photo).to(torch.uint8).numpy()
        folder, stem = self.outputs.new(), safe_stem(name)
        ids_path, seg_path = folder / f"{stem}_ids.png", folder / f"{stem}_seg.png"
        Image.fromarray(PALETTES["ade150"][torch.from_numpy(ids).long()].numpy()).save(seg_path)
        Image.fromarray(ids).save(ids_path)
        return photo.permute(1, 2, 0).numpy(), ids, ids_path, seg_path

    def ids_to_photo(self, ids: torch.Tensor, name: str) -> tuple[np.ndarray, Path]:
        """A photo (H, W, 3) from class ids (H, W), and its file ``<stem>_photo.png``."""
        photo = self.model("seg2real")(ids).permute(1, 2, 0).numpy()
        path = self.outputs.new() / f"{safe_stem(name)}_photo.png"
        Image.fromarray(photo).save(path)
        return photo, path

    def labels_to_photo(self, path: Path, name: str) -> tuple[np.ndarray, Path]:
        self.model("seg2real")
        return self.ids_to_photo(read_map(path, name, self.limits), name)

    def read_map(self, path: Path, name: str) -> np.ndarray:
        return read_map(path, name, self.limits).to(torch.uint8).numpy()

    def canvas_ids(self, value: dict[str, Any] | None) -> np.ndarray | None:
        ids = decode_canvas(value)
        if ids is not None and ids.size > self.limits.max_pixels:
            raise InputError(f"canvas: {ids.shape[1]}x{ids.shape[0]} is over this app's limit of "
                             f"{self.limits.max_pixels:,} pixels")  # fmt: skip
        return ids


def one_line(e: Exception, path: Path | None = None, name: str | None = None) -> str:
    """An error's message on one line, with a server-side upload path replaced by the file's own name."""
    text = str(e)
    if path is not None and name:
        text = text.replace(str(path), name)
    return " ".join(text.split())


def upload_of(file: Any) -> tuple[Path, str]:
    """A Gradio file value (a path string or a FileData dict) -> its path on the server and its own name."""
    if isinstance(file, dict):
        path = Path(file["path"])
        return path, file.get("orig_name") or path.name
    path = Path(str(file))
    return path, path.name


def build_app(work: Translators) -> Any:
    """The Gradio Blocks of both tabs and the two API endpoints (not launched)."""
    import gradio as gr

    def reported(fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its one-line errors raised as ``gr.Error`` (a message in the page, no traceback); any
        other exception is logged on the server with its traceback and shown as one line."""

        @functools.wraps(fn)  # gr.api reads the signature and type hints
        def wrapper(*args: Any) -> Any:
            try:
                return fn(*args)
            except (InputError, CheckpointError) as e:
                raise gr.Error(html.escape(one_line(e), quote=False), print_exception=False) from None
            except gr.Error:
                raise
            except Exception as e:  # a bug, or a corrupt file that got past the checks
                import traceback

                traceback.print_exc()
                message = html.escape(f"failed: {type(e).__name__}: {one_line(e)[:300]}", quote=False)
                raise gr.Error(message, print_exception=False) from None

        return wrapper

    def upload_call(fn: Callable[[Path, str], Any], file: Any) -> Any:
        path, name = upload_of(file)
        try:
            return fn(path, name)
        except InputError as e:
            raise InputError(one_line(e, path, name)) from None

    # --- the public API: files in, files out
    def photo_to_labels(photo: gr.FileData) -> tuple[gr.FileData, gr.FileData]:
        """A photo file -> (the map as 8-bit class ids, the map in the ADE20K display palette), PNGs."""
        _, _, ids_path, seg_path = upload_call(work.photo_to_labels, photo)
        return gr.FileData(path=str(ids_path)), gr.FileData(path=str(seg_path))

    def labels_to_photo(labels: gr.FileData) -> gr.FileData:
        """A label map file (8-bit class ids, or colours in the training or ADE20K display palette) -> a photo PNG."""
        return gr.FileData(path=str(upload_call(work.labels_to_photo, labels)[1]))

    # this module's annotations are strings (PEP 563) and gradio is imported here: gr.api needs the types
    photo_to_labels.__annotations__ = {"photo": gr.FileData, "return": tuple[gr.FileData, gr.FileData]}
    labels_to_photo.__annotations__ = {"labels": gr.FileData, "return": gr.FileData}

    # --- the page's events (private)
    def on_photo(file: str | None, opacity: float) -> tuple[Any, ...]:
        if file is None:
            return None, None, None, "", None, None, None
        photo, ids, ids_path, seg_path = upload_call(work.photo_to_labels, file)
        return (_DISPLAY[ids], overlay(photo, ids, opacity), [str(ids_path), str(seg_path)], legend_html(ids),
                photo, ids, None)  # fmt: skip

    def on_opacity(photo: np.ndarray | None, ids: np.ndarray | None, opacity: float) -> Any:
        return None if photo is None or ids is None else overlay(photo, ids, opacity)

    def brush(choice: str, size: float) -> Any:
        colour = hex_colour(class_of(choice))
        return gr.ImageEditor(brush=gr.Brush(colors=[colour], default_color=colour, color_mode="fixed",
                                             default_size=int(size)))  # fmt: skip

    def blank(choice: str, width: float, height: float) -> Any:
        width, height = round_to_4(int(width), "width"), round_to_4(int(height), "height")
        if width * height > work.limits.max_pixels:
            raise InputError(f"canvas: {width}x{height} is over this app's limit of {work.limits.max_pixels:,} pixels")
        return canvas_value(np.full((height, width), class_of(choice), np.uint8))

    def from_prediction(ids: np.ndarray | None) -> Any:
        if ids is None:
            raise InputError("no prediction yet: upload a photo in the Photo → labels tab first")
        return canvas_value(ids), gr.Tabs(selected="labels")

    def from_map(file: str | None) -> Any:
        if file is None:
            return gr.skip()
        return canvas_value(upload_call(work.read_map, file))

    def on_canvas(value: dict[str, Any] | None) -> tuple[Any, ...]:
        ids = work.canvas_ids(value)
        if ids is None:
            return None, None, None, None
        photo, path = work.ids_to_photo(torch.from_numpy(ids).long(), "canvas")
        return photo, str(path), _TRAIN[ids], ids

    def fill(value: dict[str, Any] | None, choice: str, event: gr.SelectData) -> Any:
        ids = work.canvas_ids(value)
        if ids is None or not event.index:
            return gr.skip()
        x, y = (int(v) for v in event.index[:2])
        if not (0 <= x < ids.shape[1] and 0 <= y < ids.shape[0]):
            return gr.skip()
        picture = Image.fromarray(ids).copy()  # fromarray shares the array, read-only: floodfill would do nothing
        ImageDraw.floodfill(picture, (x, y), class_of(choice))
        return canvas_value(np.asarray(picture).copy())

    fill.__annotations__["event"] = gr.SelectData  # how gradio knows to pass the click
    private = {"api_visibility": "private"}
    start = hex_colour(1)
    missing = {role: f"**No {role} generator loaded**: start `{PROG}` with `--{role} FILE` to use this tab."
               for role, model in work.models.items() if model is None}  # fmt: skip
    loaded = ", ".join(f"{role}: {m.describe}" for role, m in work.models.items() if m is not None)
    with gr.Blocks(title="CycleGAN ADE20K", delete_cache=(OUTPUT_MAX_AGE_S, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown(f"### CycleGAN photo ↔ ADE20K labels\n{loaded}")
        photo_state, ids_state = gr.State(None), gr.State(None)
        with gr.Tabs() as tabs:
            with gr.Tab("Photo → labels", id="photo"):
                if "real2seg" in missing:
                    gr.Markdown(missing["real2seg"])
                with gr.Row():
                    photo_in = gr.Image(label="Photo", type="filepath", sources=["upload", "clipboard"], height=HEIGHT,
                                        elem_id="photo-in")  # fmt: skip
                    colours = gr.Image(label="Labels (ADE20K display colours)", format="png", interactive=False,
                                       height=HEIGHT, elem_id="labels-out")  # fmt: skip
                with gr.Row():
                    with gr.Column():
                        mixed = gr.Image(label="Overlay", format="png", interactive=False, height=HEIGHT)
                        opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity")
                    with gr.Column():
                        legend = gr.HTML(label="Classes present")
                        downloads = gr.File(label="Download the map (id PNG, colour PNG)", interactive=False)
                        to_canvas = gr.Button("Paint on this map →")
            with gr.Tab("Labels → photo", id="labels"):
                if "seg2real" in missing:
                    gr.Markdown(missing["seg2real"])
                with gr.Row():
                    picker = gr.Dropdown(CLASS_CHOICES, value=CLASS_CHOICES[1], filterable=True,
                                         label="Class (type to search)", elem_id="picker")  # fmt: skip
                    size = gr.Slider(1, 128, value=16, step=1, label="Brush size")
                    width = gr.Number(DEFAULT_CANVAS, label="Width", precision=0, minimum=4)
                    height = gr.Number(DEFAULT_CANVAS, label="Height", precision=0, minimum=4)
                    new = gr.Button("New canvas in this class")
                with gr.Row():
                    editor = gr.ImageEditor(
                        value=canvas_value(np.zeros((DEFAULT_CANVAS, DEFAULT_CANVAS), np.uint8)),
                        label="Paint (training palette; the eraser reveals the starting map)",
                        type="numpy", image_mode="RGBA", sources=None, transforms=(), layers=False,
                        canvas_size=(DEFAULT_CANVAS, DEFAULT_CANVAS), elem_id="canvas",
                        brush=gr.Brush(colors=[start], default_color=start, color_mode="fixed", default_size=16),
                        eraser=gr.Eraser(default_size=16),
                    )  # fmt: skip
                    photo_out = gr.Image(label="Photo", format="png", interactive=False, height=HEIGHT,
                                         elem_id="photo-out")  # fmt: skip
                with gr.Row():
                    decoded = gr.Image(label="Decoded labels: click a region to fill it with the class",
                                       format="png", interactive=False, height=HEIGHT, elem_id="decoded")  # fmt: skip
                    with gr.Column():
                        map_in = gr.File(label="Start from a label map (ids PNG, or training / ADE20K colours)",
                                         file_types=["image"], type="filepath")  # fmt: skip
                        photo_file = gr.File(label="Download the photo", interactive=False)
                canvas_ids = gr.State(None)

        photo_in.change(reported(on_photo), [photo_in, opacity],
                        [colours, mixed, downloads, legend, photo_state, ids_state, canvas_ids], **private)  # fmt: skip
        opacity.change(reported(on_opacity), [photo_state, ids_state, opacity], mixed, **private)
        to_canvas.click(reported(from_prediction), ids_state, [editor, tabs], **private)
        gr.on([picker.change, size.release], reported(brush), [picker, size], editor, queue=False, **private)
        new.click(reported(blank), [picker, width, height], editor, **private)
        map_in.upload(reported(from_map), map_in, editor, **private)
        editor.input(reported(on_canvas), editor, [photo_out, photo_file, decoded, canvas_ids],
                      trigger_mode="always_last", **private)  # fmt: skip
        decoded.select(reported(fill), [editor, picker], editor, **private)
        demo.load(reported(on_canvas), editor, [photo_out, photo_file, decoded, canvas_ids], **private)
        gr.api(reported(photo_to_labels), api_name="photo_to_labels")
        gr.api(reported(labels_to_photo), api_name="labels_to_photo")
    return demo


def find_generator(role: str, folder: Path) -> Path | None:
    """``CYCLEGAN_<ROLE>``, else in ``folder`` the newest ``<role>_gen_N.pt``, else ``<role>.onnx``."""
    named = os.environ.get(f"CYCLEGAN_{role.upper()}")
    if named:
        return Path(named)
    epochs = {p: p.stem.rsplit("_", 1)[-1] for p in folder.glob(f"{role}_gen_*.pt")}
    exports = sorted((int(n), p) for p, n in epochs.items() if n.isdigit())
    if exports:
        return exports[-1][1]
    onnx = folder / f"{role}.onnx"
    return onnx if onnx.is_file() else None


def default_host() -> str:
    """127.0.0.1; inside a Hugging Face Space (``SPACE_ID`` set), the address the Space gives, else 0.0.0.0."""
    if os.environ.get("SPACE_ID"):
        return os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0")
    return "127.0.0.1"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--real2seg", type=Path, help="photo -> labels generator, .pt or .onnx (default: "
                        "$CYCLEGAN_REAL2SEG, else the newest real2seg_gen_N.pt or real2seg.onnx here; "
                        "without one the photo tab says so)")  # fmt: skip
    parser.add_argument("--seg2real", type=Path, help="labels -> photo generator, .pt or .onnx (default: "
                        "$CYCLEGAN_SEG2REAL, else the newest seg2real_gen_N.pt or seg2real.onnx here)")  # fmt: skip
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1, only this machine; 0.0.0.0 "
                        "inside a Hugging Face Space). Anything else exposes the app: see the README")  # fmt: skip
    parser.add_argument("--port", type=positive_int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port to listen on")  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    parser.add_argument("--width", type=positive_int, help="translate at this model width (rounded to a multiple "
                        "of 4; give --height too), results resized back, as cyclegan-generate --width (default: "
                        "each input at its own size, as cyclegan-generate --own-size)")  # fmt: skip
    parser.add_argument("--height", type=positive_int, help="model height, with --width")
    parser.add_argument("--max-pixels", type=positive_int, default=Limits.max_pixels,
                        help="largest upload, width x height, refused from its header before decoding")  # fmt: skip
    parser.add_argument("--max-mb", type=float, default=Limits.max_bytes / 2**20, help="largest upload in MB")
    parser.add_argument("--queue-size", type=positive_int, default=Limits.queue_size,
                        help="requests that may wait for the model (one runs at a time); more are refused")  # fmt: skip
    parser.add_argument("--bench", metavar="SIDES", help="instead of serving: time each loaded generator's "
                        "request (file in, PNG out) on N x N inputs for each N of this comma-separated list, "
                        "e.g. 256,512, and print the median of --bench-runs")  # fmt: skip
    parser.add_argument("--bench-runs", type=positive_int, default=5, help="timed requests per size in --bench")
    return parser


def load_models(args: argparse.Namespace) -> dict[str, Model | None]:
    device = pick_device(args.device)
    if (args.width is None) != (args.height is None):
        raise InputError("--width/--height: give both (a fixed model size) or neither (each input's own size)")
    size = None if args.width is None else (round_to_4(args.width, "width"), round_to_4(args.height, "height"))
    paths = {role: getattr(args, role) or find_generator(role, Path.cwd()) for role in ROLES}
    if not any(paths.values()):
        raise InputError("no generator: give --real2seg FILE and/or --seg2real FILE (.pt or .onnx)")
    return {role: None if path is None else Model(path, role, device, size) for role, path in paths.items()}


def bench(work: Translators, sides: list[int], runs: int) -> None:
    """Print each loaded generator's median request time (decode the file, translate, write the PNG)."""
    rng = np.random.default_rng(0)
    folder = work.outputs.new()
    torch_threads = torch.get_num_threads()
    for role, model in work.models.items():
        if model is None:
            continue
        for side in sides:
            if role == "real2seg":
                path = folder / f"photo_{side}.png"
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
                call: Callable[[], Any] = lambda p=path: work.photo_to_labels(p, p.name)  # noqa: E731
            else:
                path = folder / f"ids_{side}.png"
                blocks = rng.integers(0, NUM_CLASSES + 1, (side // 32, side // 32), dtype=np.uint8)
                Image.fromarray(np.kron(blocks, np.ones((32, 32), np.uint8))).save(path)
                call = lambda p=path: work.labels_to_photo(p, p.name)  # noqa: E731
            call()  # warm-up
            times = []
            for _ in range(runs):
                begin = time.perf_counter()
                call()
                times.append(time.perf_counter() - begin)
            print(f"{PROG}: bench {role} {model.describe} {side}x{side}: median {statistics.median(times):.3f} s, "
                  f"min {min(times):.3f} s over {runs} requests ({torch_threads} torch threads)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Load the generators (one-line errors), then bench or build and serve the app until interrupted."""
    if args.max_mb <= 0:
        raise InputError(f"--max-mb: must be > 0, got {args.max_mb}")
    sides = []
    if args.bench:
        try:
            sides = [int(s) for s in args.bench.split(",")]
        except ValueError:
            raise InputError(f"--bench {args.bench}: not a comma-separated list of sides") from None
    limits = Limits(args.max_pixels, int(args.max_mb * 2**20), args.queue_size)
    work = Translators(load_models(args), limits)
    try:
        if sides:
            bench(work, sides, args.bench_runs)
            return 0
        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        # Gradio opens images too (headers, and the editor's canvas PNGs): past twice the limit PIL refuses
        # them at open, before decoding, whatever the request.
        Image.MAX_IMAGE_PIXELS = limits.max_pixels
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        demo = build_app(work)
        demo.queue(default_concurrency_limit=1, max_size=limits.queue_size)
        demo.launch(server_name=args.host or default_host(), server_port=args.port, show_error=True,
                    max_file_size=limits.max_bytes)  # fmt: skip
    finally:
        work.outputs.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns 0, or 2 after a one-line error."""
    return run_reporting_errors(PROG, run, build_parser().parse_args(argv), (InputError, CheckpointError))


if __name__ == "__main__":
    raise SystemExit(main())
