"""cyclegan-app: its two API endpoints through gradio_client against a served app on localhost, equal to
cyclegan-generate's files for the same inputs; one-line errors, the upload limits, what it serves and keeps
off the API; the canvas decoding; the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from gen_fixtures import HIGH_CLASS, LOW_CLASS, block_labels, export_generators, photo_for
from PIL import Image

from cyclegan import app, generate
from cyclegan.palette import DISPLAY_PALETTE, TRAIN_PALETTE

gradio = pytest.importorskip("gradio", reason="cyclegan-app needs gradio: pip install -e '.[app]'")
gradio_client = pytest.importorskip("gradio_client", reason="the endpoint tests need gradio_client")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

ROOT = Path(__file__).resolve().parents[1]
LIMITS = app.Limits(max_pixels=80 * 80, max_bytes=64 << 10, queue_size=4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(models: dict, limits: app.Limits = LIMITS):
    """(the launched Blocks, its URL, its Translators); the caller closes both."""
    work = app.Translators(models, limits)
    demo = app.build_app(work)
    demo.queue(default_concurrency_limit=1, max_size=limits.queue_size)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            show_error=True, max_file_size=limits.max_bytes)  # fmt: skip
    return demo, url, work


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    return export_generators(tmp_path_factory.mktemp("gens"))


@pytest.fixture(scope="module")
def served(generators):
    """An app with both hand-built generators, each input at its own size; and a client of it."""
    cpu = torch.device("cpu")
    models = {role: app.Model(path, role, cpu, None) for role, path in zip(app.ROLES, generators, strict=True)}
    demo, url, work = serve(models)
    client = gradio_client.Client(url, verbose=False, download_files=str(work.outputs.root.parent / "client"))
    yield client, url
    client.close()
    demo.close()
    work.outputs.close()


def save(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def generated(path: Path, generator: Path, out: Path, *flags: str) -> Path:
    """cyclegan-generate's output folder for one input."""
    code = generate.main(["--input", str(path), "--generator", str(generator), "--output-dir", str(out), *flags])
    assert code == 0
    return out


def test_photo_to_labels_equals_generate(served, generators, tmp_path):
    """PNG and JPEG photos, one with sides that are not multiples of 4: the id PNG and the colour PNG are
    cyclegan-generate --own-size --palette ade150's, byte for byte."""
    client, _ = served
    labels = block_labels(50, 66, seed=3)
    for path in (save(photo_for(labels), tmp_path / "odd.png"), save(photo_for(labels[:48, :64]), tmp_path / "a.jpg")):
        ids_file, seg_file = client.predict(gradio_client.handle_file(str(path)), api_name="/photo_to_labels")
        assert Path(ids_file).name == f"{path.stem}_ids.png" and Path(seg_file).name == f"{path.stem}_seg.png"
        out = generated(path, generators[0], tmp_path / f"gen_{path.stem}", "--own-size", "--palette", "ade150")
        assert Path(ids_file).read_bytes() == (out / f"{path.stem}_ids.png").read_bytes()
        assert Path(seg_file).read_bytes() == (out / f"{path.stem}_seg.png").read_bytes()
    ids = read(ids_file)
    assert set(np.unique(ids)) <= {HIGH_CLASS, LOW_CLASS} and ids.shape == (48, 64)
    assert np.array_equal(read(seg_file), DISPLAY_PALETTE.numpy()[ids])


def test_labels_to_photo_equals_generate(served, generators, tmp_path):
    """One map as 8-bit ids, as training colours and as ADE20K display colours: each photo is
    cyclegan-generate --own-size's (--palette auto), byte for byte."""
    client, _ = served
    labels = block_labels(44, 60, seed=4, classes=(0, HIGH_CLASS, LOW_CLASS, 5))
    maps = [
        save(labels, tmp_path / "ids.png"),
        save(TRAIN_PALETTE.numpy()[labels], tmp_path / "train.png"),
        save(DISPLAY_PALETTE.numpy()[labels], tmp_path / "ade.png"),
    ]
    photos = []
    for path in maps:
        photo = client.predict(gradio_client.handle_file(str(path)), api_name="/labels_to_photo")
        assert Path(photo).name == f"{path.stem}_photo.png"
        out = generated(path, generators[1], tmp_path / f"gen_{path.stem}", "--own-size")
        assert Path(photo).read_bytes() == (out / f"{path.stem}_photo.png").read_bytes()
        photos.append(read(photo))
    assert photos[0].shape == (44, 60, 3) and all(np.array_equal(photos[0], p) for p in photos[1:])


def api_error(client, path: Path, api_name: str) -> str:
    with pytest.raises(gradio_client.exceptions.AppError) as caught:
        client.predict(gradio_client.handle_file(str(path)), api_name=api_name)
    message = str(caught.value)
    assert "\n" not in message.strip() and "Traceback" not in message and "/tmp/gradio" not in message, message
    return message


def test_bad_inputs_are_one_line(served, tmp_path):
    """Not an image, a map in a foreign palette, a photo given as a map (4 channels), too many pixels,
    too many bytes: one line each, naming the upload by its own name."""
    client, _ = served
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert "notes.png: not an image file" in api_error(client, text, "/photo_to_labels")
    rng = np.random.default_rng(0)
    foreign = np.kron(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    message = api_error(client, save(foreign, tmp_path / "cityscapes.png"), "/labels_to_photo")
    assert "cityscapes.png: not a label map in the training or the ADE20K display palette" in message
    rgba = save(np.zeros((16, 16, 4), np.uint8), tmp_path / "rgba.png")
    assert "rgba.png: has 4 channels (RGBA)" in api_error(client, rgba, "/labels_to_photo")
    big = save(np.zeros((81, 80, 3), np.uint8), tmp_path / "big.png")
    assert "big.png: 80x81 is 6,480 pixels, over this app's limit of 6,400" in api_error(
        client, big, "/photo_to_labels"
    )
    noise = save(rng.integers(0, 256, (79, 79, 3), dtype=np.uint8), tmp_path / "noise.bmp")  # 18 KB a row...
    noise.write_bytes(noise.read_bytes() * 4)  # ...and over the byte limit with trailing junk
    with pytest.raises(Exception, match="(?i)size|large|limit"):
        client.predict(gradio_client.handle_file(str(noise)), api_name="/photo_to_labels")


def test_api_has_only_the_two_endpoints_and_serves_no_other_file(served, tmp_path):
    """The page's events (canvas, slider, buttons) are private; files outside the app's outputs are not served."""
    client, url = served
    endpoints = client.view_api(return_format="dict", print_info=False)
    assert set(endpoints["named_endpoints"]) == {"/photo_to_labels", "/labels_to_photo"}
    assert not endpoints["unnamed_endpoints"]
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    for path in (secret, ROOT / "setup.cfg", Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=10)
        assert caught.value.code in (403, 404)


def test_a_missing_generator_says_so(generators, tmp_path):
    cpu = torch.device("cpu")
    demo, url, work = serve({"real2seg": app.Model(generators[0], "real2seg", cpu, None), "seg2real": None})
    try:
        client = gradio_client.Client(url, verbose=False, download_files=str(tmp_path))
        message = api_error(client, save(np.zeros((8, 8), np.uint8), tmp_path / "m.png"), "/labels_to_photo")
        client.close()
        assert "no seg2real generator: start cyclegan-app with --seg2real FILE" in message
    finally:
        demo.close()
        work.outputs.close()


def test_fixed_model_size_equals_generate_width_height(generators, tmp_path):
    """--width/--height: resized to the model size and back, as cyclegan-generate --width/--height."""
    work = app.Translators({"real2seg": app.Model(generators[0], "real2seg", torch.device("cpu"), (32, 32))}, LIMITS)
    try:
        path = save(photo_for(block_labels(40, 56, seed=5)), tmp_path / "p.png")
        _, _, ids_path, seg_path = work.photo_to_labels(path, "p.png")
        out = generated(path, generators[0], tmp_path / "gen", "--width", "32", "--height", "32", "--palette", "ade150")
        assert ids_path.read_bytes() == (out / "p_ids.png").read_bytes()
        assert seg_path.read_bytes() == (out / "p_seg.png").read_bytes()
    finally:
        work.outputs.close()


def test_canvas_decodes_strokes_by_alpha_and_nearest_training_colour():
    """Background in training colours; a layer whose antialiased stroke edge has partial alpha and slightly
    off colours: pixels at alpha >= 128 take the nearest training colour's class, the rest the background's."""
    train = TRAIN_PALETTE.numpy()
    background = np.zeros((8, 8, 4), np.uint8)
    background[..., :3], background[..., 3] = train[5], 255
    background[:, :2, 3] = 0  # transparent: unlabeled
    layer = np.zeros((8, 8, 4), np.uint8)
    layer[2:6, 2:6, :3] = np.clip(train[HIGH_CLASS].astype(int) + [-20, 10, -15], 0, 255)
    layer[2:6, 2:6, 3] = 255
    layer[2:6, 6, :3], layer[2:6, 6, 3] = train[HIGH_CLASS], 140  # edge, counted
    layer[2:6, 7, :3], layer[2:6, 7, 3] = train[HIGH_CLASS], 60  # faint edge, not counted
    ids = app.decode_canvas({"background": background, "layers": [layer], "composite": None})
    expected = np.full((8, 8), 5)
    expected[:, :2] = 0
    expected[2:6, 2:7] = HIGH_CLASS
    assert np.array_equal(ids, expected)
    assert np.array_equal(app.decode_canvas(app.canvas_value(ids.astype(np.uint8))), ids)


def test_legend_lists_classes_by_share():
    ids = np.array([[HIGH_CLASS] * 3 + [LOW_CLASS]], np.uint8)
    legend = app.legend_html(ids)
    assert legend.index("bookcase") < legend.index("bed") and "75.0%" in legend and "25.0%" in legend


def run_app(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CYCLEGAN_REAL2SEG", None), env.pop("CYCLEGAN_SEG2REAL", None)
    return subprocess.run([sys.executable, "-m", "cyclegan.app", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120)  # fmt: skip


def test_command_line(generators, tmp_path):
    """--help answers without importing gradio; a generator given for the other role, or none at all,
    is one error line and exit 2; --bench times requests without serving."""
    code = "import sys; from cyclegan import app\ntry: app.main(['--help'])\nexcept SystemExit: pass\n"
    code += "print('gradio' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("False") and "--max-pixels" in proc.stdout
    proc = run_app("--seg2real", str(generators[0]))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "real2seg_gen_3.pt: is a real2seg generator, given as --seg2real" in proc.stderr
    proc = run_app(cwd=tmp_path)
    assert proc.returncode == 2 and "no generator: give --real2seg FILE" in proc.stderr
    proc = run_app("--real2seg", str(generators[0]), "--bench", "32", "--bench-runs", "1")
    assert proc.returncode == 0 and "bench real2seg real2seg_gen_3.pt (rgb mode) 32x32: median" in proc.stdout


def test_generators_found_in_the_folder(generators, tmp_path, monkeypatch):
    """As in a Space: the newest <role>_gen_N.pt in the folder, else <role>.onnx; the environment first."""
    for epoch in (9, 10):
        (tmp_path / f"seg2real_gen_{epoch}.pt").write_bytes(b"")
    (tmp_path / "real2seg.onnx").write_bytes(b"")
    monkeypatch.delenv("CYCLEGAN_REAL2SEG", raising=False)
    monkeypatch.delenv("CYCLEGAN_SEG2REAL", raising=False)
    assert app.find_generator("seg2real", tmp_path) == tmp_path / "seg2real_gen_10.pt"
    assert app.find_generator("real2seg", tmp_path) == tmp_path / "real2seg.onnx"
    monkeypatch.setenv("CYCLEGAN_REAL2SEG", str(generators[0]))
    assert app.find_generator("real2seg", tmp_path) == generators[0]
