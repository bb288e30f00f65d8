"""cyclegan-eval --protocol ade20k and train.eval_segmenter: the resolution rule, the segmenter's loading,
class mapping and refusals, the three rows, KID, the command line and the in-training metric.

No weights can be downloaded here: the segmenters are tiny randomly initialised transformers models of
the 150 ADE20K classes (or of foreign ones), saved by the tests with ``save_pretrained`` and read by the
real loading code.
"""

import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import webdataset as wds
from gen_fixtures import HIGH_CLASS, LOW_CLASS, block_labels, export_generators, jpeg_bytes, png_bytes, write_shards
from PIL import Image
from torch import nn
from train_helpers import REPO, subprocess_env, tiny_args

from cyclegan import evaluate, protocol
from cyclegan.checkpoint import load_network
from cyclegan.config import ConfigError, load_config
from cyclegan.evaluate import confusion_matrix, segmentation_scores
from cyclegan.inference import InputError, translator_for
from cyclegan.palette import CLASS_NAMES
from cyclegan.protocol import SIDE, check_classes, kid_score, load_segmenter, make_kid, resize_labels, resize_photos

transformers = pytest.importorskip("transformers")

ADE_LABELS = {k: ("bed " if name == "bed" else name) for k, name in enumerate(CLASS_NAMES)}  # as the hub's
CITYSCAPES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")  # fmt: skip
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def tiny_segformer(labels: dict[int, str]) -> nn.Module:
    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16,
        num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.SegformerForSemanticSegmentation(config).eval()


def tiny_upernet() -> nn.Module:
    """The reference segmenter's architecture (UperNet on ConvNeXt), whose logits come at full size."""
    backbone = transformers.ConvNextConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    config = transformers.UperNetConfig(backbone_config=backbone, hidden_size=8, auxiliary_in_channels=8,
                                        auxiliary_channels=8, num_labels=150, id2label=ADE_LABELS,
                                        label2id={v: k for k, v in ADE_LABELS.items()})  # fmt: skip
    torch.manual_seed(0)
    return transformers.UperNetForSemanticSegmentation(config).eval()


@pytest.fixture(scope="module")
def segmenter_dir(tmp_path_factory):
    """A tiny SegFormer of the 150 classes with a preprocessor config of its own mean and std, whose
    classifier picks between its classes HIGH_CLASS - 1 and LOW_CLASS - 1 by its random weights (so that
    scores on the test maps are neither 0 nor 1)."""
    folder = tmp_path_factory.mktemp("segformer")
    model = tiny_segformer(ADE_LABELS)
    others = [k for k in range(150) if k not in (HIGH_CLASS - 1, LOW_CLASS - 1)]
    with torch.no_grad():
        model.decode_head.classifier.weight[others] = 0.0
        model.decode_head.classifier.bias[others] = -100.0
    model.save_pretrained(folder)
    transformers.SegformerImageProcessor(image_mean=MEAN, image_std=STD).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    return export_generators(tmp_path_factory.mktemp("gens"))


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("cyclegan-eval: error: ") and err.count("\n") == 1, err
    return err


# --- the resolution ------------------------------------------------------------------------------


def test_resize_rule_by_hand():
    """Short side to 256, nearest for maps, then the centre crop: a 64 x 128 map of 16-px stripes is
    scaled 4x to 256 x 512, whose centre columns 128..383 are the map's columns 32..95."""
    stripes = np.repeat(np.arange(8, dtype=np.int64), 16)[None].repeat(64, 0)  # 64 x 128, ids 0..7
    resized = resize_labels(torch.from_numpy(stripes)[None])
    assert resized.shape == (1, SIDE, SIDE) and resized.dtype == torch.int64
    assert np.array_equal(resized[0].numpy(), np.kron(stripes[:, 32:96], np.ones((4, 4), np.int64)))
    assert protocol.protocol_shape(375, 500) == (256, 341) and protocol.protocol_shape(512, 300) == (437, 256)

    # a photo, black left of its middle and white right of it, 512 x 1024: halved, then columns 128..383
    photo = torch.zeros(1, 3, 512, 1024, dtype=torch.uint8)
    photo[..., 512:] = 255
    out = resize_photos(photo)
    assert out.shape == (1, 3, SIDE, SIDE) and out.dtype == torch.uint8
    assert (out[..., :126] == 0).all() and (out[..., 130:] == 255).all()  # the edge at 128, blurred by antialias
    flat = torch.full((2, 3, 300, 400), 77, dtype=torch.uint8)
    assert (resize_photos(flat) == 77).all()
    wide = torch.arange(3 * 256 * 300, dtype=torch.int64).reshape(1, 3, 256, 300).to(torch.uint8)
    assert torch.equal(resize_photos(wide), wide[..., 22:278])  # already 256 high: only the crop, (300 - 256) // 2


# --- the segmenter -------------------------------------------------------------------------------


def test_classes_are_checked_by_name_in_order():
    check_classes("ok", ADE_LABELS)  # "bed " with the hub's trailing space
    swapped = {**ADE_LABELS, 3: "tree", 4: "floor"}
    with pytest.raises(InputError, match=r"^sw: not an ADE20K-150 segmenter: its class 3 is 'tree', ADE20K's class "
                                         r"3 is 'floor'$"):  # fmt: skip
        check_classes("sw", swapped)
    with pytest.raises(InputError, match=r"its class 0 is 'road', ADE20K's class 0 is 'wall' \(19 classes, not 150\)"):
        check_classes("city", dict(enumerate(CITYSCAPES)))
    with pytest.raises(InputError, match=r"its class 149 is missing.*\(149 classes"):
        check_classes("short", {k: v for k, v in ADE_LABELS.items() if k < 149})
    with pytest.raises(InputError, match=r"beyond ADE20K's 150 \(151 classes"):
        check_classes("long", {**ADE_LABELS, 150: "extra"})


def test_its_class_0_is_our_1_and_unlabeled_pixels_are_not_scored(tmp_path):
    """A SegFormer whose classifier says its class 0 (wall) everywhere: our id 1. On a map that is
    unlabeled on top, wall bottom left and building (2) bottom right, half the labelled pixels are right,
    wall's IoU is 1/2, building's 0."""
    model = tiny_segformer(ADE_LABELS)
    with torch.no_grad():
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.zero_()
        model.decode_head.classifier.bias[0] = 1.0
    model.save_pretrained(tmp_path)
    segmenter = load_segmenter(str(tmp_path), "cpu")
    photos = torch.randint(0, 256, (2, 3, SIDE, SIDE), dtype=torch.uint8)
    ids = segmenter(photos)
    assert ids.shape == (2, SIDE, SIDE) and (ids == 1).all()
    labels = torch.zeros(2, SIDE, SIDE, dtype=torch.long)
    labels[:, SIDE // 2 :, : SIDE // 2] = 1
    labels[:, SIDE // 2 :, SIDE // 2 :] = 2
    scores = segmentation_scores(confusion_matrix(ids, labels))
    assert scores["pixel_acc"] == 0.5 and scores["labelled_pixels"] == SIDE * SIDE
    assert scores["per_class_iou"][:2] == [0.5, 0.0] and scores["mean_iou"] == 0.25
    assert segmenter.record["normalisation"]["from"].startswith("ImageNet's")  # no preprocessor config saved
    assert segmenter.record["normalisation"]["mean"] == list(protocol.IMAGENET_MEAN)


def test_the_reference_architecture_loads_and_reads_full_size_logits(tmp_path):
    tiny_upernet().save_pretrained(tmp_path)
    segmenter = load_segmenter(str(tmp_path), "cpu")
    ids = segmenter(torch.randint(0, 256, (1, 3, SIDE, SIDE), dtype=torch.uint8))
    assert ids.shape == (1, SIDE, SIDE) and int(ids.min()) >= 1 and int(ids.max()) <= 150
    assert segmenter.record["architecture"] == "UperNetForSemanticSegmentation"


def test_bad_segmenters_are_refused_in_one_line(tmp_path, monkeypatch):
    foreign = tmp_path / "cityscapes"
    tiny_segformer(dict(enumerate(CITYSCAPES))).save_pretrained(foreign)
    headless = tmp_path / "headless"  # a SegFormer encoder alone: the decode head's weights are not in it
    transformers.SegformerModel(tiny_segformer(ADE_LABELS).config).save_pretrained(headless)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.bin").write_bytes(b"")
    cases = [
        (foreign, "not an ADE20K-150 segmenter: its class 0 is 'road'"),
        (headless, "the checkpoint lacks"),
        (tmp_path / "empty", "not a semantic segmentation model transformers can load"),
        (tmp_path / "file.bin", "a file; the segmenter is a folder"),
        (tmp_path / "missing", "no such folder"),
    ]
    for folder, needle in cases:
        with pytest.raises(InputError) as e:
            load_segmenter(str(folder), "cpu")
        assert str(e.value).startswith(str(folder)) and needle in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(InputError, match=r'pip install -e "\.\[eval\]"'):
        load_segmenter(str(foreign), "cpu")


# --- the rows ------------------------------------------------------------------------------------


def noise_photo(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def decoded(image_bytes: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(image_bytes)).convert("RGB"))


def test_ground_truth_row_is_the_segmenter_run_directly(segmenter_dir, generators, tmp_path, capsys):
    """The ground-truth row against transformers' own pipeline on the same 256 x 256 photos: the image
    processor's normalisation, the model call and its post-processing (bilinear to 256, argmax)."""
    sizes = [(48, 64), (64, 40), (40, 40)]
    samples = [(noise_photo(h, w, i), block_labels(h, w, seed=i)) for i, (h, w) in enumerate(sizes)]
    pattern = write_shards(tmp_path / "shards", samples)
    report_path = tmp_path / "r.json"
    assert evaluate.main(["--protocol", "ade20k", "--generator", str(generators[0]), "--segmenter",
                          str(segmenter_dir), "--shards", pattern, "--json", str(report_path)]) == 0  # fmt: skip
    assert capsys.readouterr().err == ""  # no FID note without a seg2real generator, no loading chatter
    rows = json.loads(report_path.read_text())["rows"]
    assert list(rows) == ["real2seg", "ground_truth"]

    photos = torch.cat([resize_photos(torch.from_numpy(decoded(jpeg_bytes(p))).permute(2, 0, 1)[None])
                        for p, _ in samples])  # fmt: skip
    labels = torch.cat([resize_labels(torch.from_numpy(x).long()[None]) for _, x in samples])
    processor = transformers.AutoImageProcessor.from_pretrained(segmenter_dir)
    model = transformers.AutoModelForSemanticSegmentation.from_pretrained(segmenter_dir).eval()
    inputs = processor(images=list(photos.permute(0, 2, 3, 1).numpy()), do_resize=False, return_tensors="pt")
    with torch.no_grad():
        outputs = model(pixel_values=inputs["pixel_values"])
    predicted = processor.post_process_semantic_segmentation(outputs, target_sizes=[(SIDE, SIDE)] * len(samples))
    direct = segmentation_scores(confusion_matrix(torch.stack(predicted) + 1, labels))  # its class k is our k + 1
    assert direct["classes_present"] == rows["ground_truth"]["classes_present"] == 3
    for key in ("pixel_acc", "mean_class_acc", "mean_iou"):
        assert rows["ground_truth"][key] == pytest.approx(direct[key], abs=1e-4), key
    assert rows["ground_truth"]["gt_pixels"] == direct["gt_pixels"]


@pytest.fixture(scope="module")
def own_photo_shards(generators, tmp_path_factory):
    """256 x 256 maps of unlabeled, HIGH_CLASS and LOW_CLASS, each stored with the photo the seg2real
    generator makes of it (through cyclegan-generate's translator), losslessly: F returns the real photos."""
    seg2real, meta = load_network(generators[1], kind="generator")
    translator = translator_for(seg2real, meta)
    labels = [block_labels(SIDE, SIDE, seed=i, classes=(0, HIGH_CLASS, LOW_CLASS)) for i in range(4)]
    with torch.no_grad():
        photos = translator(torch.from_numpy(np.stack(labels)).long()).permute(0, 2, 3, 1).numpy()
    tar = tmp_path_factory.mktemp("own_photos") / "validation-000000.tar"
    with wds.TarWriter(str(tar)) as sink:  # PNG photos (PIL reads a photo by its content, whatever the key)
        for i, (photo, x) in enumerate(zip(photos, labels, strict=True)):
            sink.write({"__key__": f"ADE_val_{i:08d}", "jpg": png_bytes(photo), "label.png": png_bytes(x)})
    return str(tar)


def test_a_translator_that_returns_the_real_photos_scores_the_ground_truth_row(
    segmenter_dir, generators, own_photo_shards, inception_weights, tmp_path, capsys
):
    """Both generators, FID and KID: F's row equals the ground-truth row, per class; FID of a set against
    itself is ~0; G segments F's photos perfectly; the table is printed and the JSON records the protocol."""
    report_path = tmp_path / "table.json"
    args = ["--protocol", "ade20k", "--generator", str(generators[0]), "--generator", str(generators[1]),
            "--segmenter", str(segmenter_dir), "--shards", own_photo_shards,
            "--inception-weights", str(inception_weights), "--json", str(report_path)]  # fmt: skip
    assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    for title in evaluate.ROW_TITLES.values():
        assert title in out
    assert "+/-" in out and f"at {SIDE}x{SIDE}" in out
    report = json.loads(report_path.read_text())
    rows = report["rows"]
    assert list(rows) == ["real2seg", "seg2real", "ground_truth"]
    fake, real = rows["seg2real"], rows["ground_truth"]
    for key, value in real.items():
        assert fake[key] == value, key
    assert 0 < real["mean_iou"] < 1 and real["classes_present"] == 2
    assert abs(fake["fid"]) < 1e-2
    assert math.isfinite(fake["kid_mean"]) and fake["kid_std"] >= 0 and fake["kid_subset_size"] == 4
    assert (rows["real2seg"]["pixel_acc"], rows["real2seg"]["mean_iou"]) == (1.0, 1.0)

    recorded = report["protocol"]
    assert recorded["resolution"] == [SIDE, SIDE] and recorded["images"] == report["images"] == 4
    assert "short side to 256" in recorded["resize"] and "centre" in recorded["resize"]
    assert "unlabeled" in recorded["ignore"]
    segmenter = recorded["segmenter"]
    assert segmenter["name"] == str(segmenter_dir) and segmenter["source"] == "local folder"
    assert segmenter["model_type"] == "segformer" and "k + 1" in segmenter["class_mapping"]
    assert segmenter["normalisation"] == {"rescale": pytest.approx(1 / 255), "mean": MEAN, "std": STD,
                                          "from": "preprocessor_config.json"}  # fmt: skip
    assert recorded["fid"]["inception_weights"] == str(inception_weights)
    assert recorded["kid"]["subsets"] == 100 and recorded["kid"]["subset_size"] == 4
    assert recorded["kid"]["seed"] == protocol.KID_SEED and recorded["kid"]["subset_size_rule"] == "min(1000, images)"
    assert set(recorded["versions"]) >= {"torch", "torchvision", "transformers", "torchmetrics"}
    assert recorded["versions"]["transformers"] == transformers.__version__
    assert report["generators"]["seg2real"]["file"] == str(generators[1])


def test_one_seg2real_generator_without_inception_weights(segmenter_dir, generators, own_photo_shards, tmp_path,
                                                          capsys):  # fmt: skip
    report_path = tmp_path / "r.json"
    assert evaluate.main(["--protocol", "ade20k", "--generator", str(generators[1]), "--segmenter",
                          str(segmenter_dir), "--shards", own_photo_shards, "--limit", "2",
                          "--json", str(report_path)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--inception-weights" in err and "FID and KID left out" in err
    report = json.loads(report_path.read_text())
    assert list(report["rows"]) == ["seg2real", "ground_truth"] and report["images"] == 2
    assert "fid" not in report["rows"]["seg2real"] and report["protocol"]["fid"] is None
    assert report["protocol"]["kid"] is None


# --- KID -----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_is_torchmetrics_own_with_a_seeded_reduced_subset():
    """Against torchmetrics' KernelInceptionDistance run directly on the same features, seeded the same:
    7 real and 6 fake feature vectors, so the subset size comes down from 1000 to 6."""
    from torchmetrics.image.kid import KernelInceptionDistance

    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(7, 16, generator=gen), torch.randn(6, 16, generator=gen) + 0.3
    kid = make_kid(nn.Identity())
    kid.update(real[:4], real=True)
    kid.update(real[4:], real=True)
    kid.update(fake, real=False)
    state = torch.get_rng_state()
    scores = kid_score(kid)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is left as it was
    assert scores["kid_subset_size"] == 6

    direct = KernelInceptionDistance(feature=nn.Identity(), subsets=100, subset_size=6)
    direct.update(real, real=True)
    direct.update(fake, real=False)
    torch.manual_seed(protocol.KID_SEED)
    mean, std = direct.compute()
    assert (scores["kid_mean"], scores["kid_std"]) == (mean.item(), std.item())
    assert mean.item() > 0 and std.item() > 0

    few = make_kid(nn.Identity())
    few.update(real[:1], real=True)
    few.update(fake[:1], real=False)
    with pytest.raises(ValueError, match="KID needs at least 2 images, got 1"):
        kid_score(few)


# --- the command line: bad input -----------------------------------------------------------------


def test_protocol_cli_errors_are_one_line(segmenter_dir, generators, own_photo_shards, tmp_path, capsys):
    foreign = tmp_path / "cityscapes"
    tiny_segformer(dict(enumerate(CITYSCAPES))).save_pretrained(foreign)
    wrong_inception = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3)}, wrong_inception)
    capsys.readouterr()  # save_pretrained's progress bar
    real2seg, seg2real = str(generators[0]), str(generators[1])
    protocol_args = ["--protocol", "ade20k", "--shards", own_photo_shards]
    cases = [
        (["--generator", real2seg, "--segmenter", str(segmenter_dir), "--shards", own_photo_shards],
         "--segmenter " + str(segmenter_dir) + ": only with --protocol ade20k"),
        (["--generator", real2seg, "--generator", seg2real, "--shards", own_photo_shards],
         "--generator: one file without --protocol, got 2"),
        ([*protocol_args, "--generator", real2seg], "--protocol ade20k: needs --segmenter ID_OR_DIR"),
        ([*protocol_args, "--generator", real2seg, "--generator", real2seg, "--segmenter", str(segmenter_dir)],
         "a second real2seg generator"),
        ([*protocol_args, "--generator", seg2real, "--generator", real2seg, "--generator", seg2real,
          "--segmenter", str(segmenter_dir)], "at most one real2seg and one seg2real file, got 3"),
        ([*protocol_args, "--generator", real2seg, "--segmenter", str(foreign)],
         "not an ADE20K-150 segmenter: its class 0 is 'road', ADE20K's class 0 is 'wall'"),
        ([*protocol_args, "--generator", real2seg, "--segmenter", str(tmp_path / "nowhere")], "no such folder"),
        ([*protocol_args, "--generator", seg2real, "--segmenter", str(segmenter_dir), "--inception-weights",
          str(wrong_inception)], "wrong.pth: not the FID Inception weights"),
        ([*protocol_args, "--generator", seg2real, "--segmenter", str(segmenter_dir), "--inception-weights",
          str(tmp_path / "absent.pth")], "absent.pth: no such file"),
        ([*protocol_args[:2], "--generator", real2seg, "--segmenter", str(segmenter_dir), "--shards",
          write_shards(tmp_path / "empty", [])], "no samples"),
    ]  # fmt: skip
    for args, needle in cases:
        assert evaluate.main(args) == 2, args
        assert needle in one_line_error(capsys)


def test_protocol_cli_without_transformers_says_how_to_install_it(segmenter_dir, generators, own_photo_shards,
                                                                  monkeypatch, capsys):  # fmt: skip
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert evaluate.main(["--protocol", "ade20k", "--generator", str(generators[0]), "--segmenter",
                          str(segmenter_dir), "--shards", own_photo_shards]) == 2  # fmt: skip
    assert 'transformers, which is not installed: pip install -e ".[eval]"' in one_line_error(capsys)


@pytest.mark.slow
def test_a_hub_id_that_cannot_be_downloaded_is_one_line(generators, own_photo_shards):
    """In a fresh process with the hub offline (as this machine is): the id, why, and that a folder works."""
    args = ["--protocol", "ade20k", "--generator", str(generators[0]), "--segmenter", protocol.REFERENCE_SEGMENTER,
            "--shards", own_photo_shards]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "cyclegan.evaluate", *args], cwd=REPO, capture_output=True,
                          text=True, env=subprocess_env(HF_HUB_OFFLINE="1"), timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    err = done.stderr
    assert err.startswith(f"cyclegan-eval: error: {protocol.REFERENCE_SEGMENTER}: ") and err.count("\n") == 1, err
    assert "cannot load it from the Hugging Face hub" in err and "pass that folder" in err


# --- inside training -----------------------------------------------------------------------------


def test_training_logs_the_segmenter_scores_of_f(train_shards, segmenter_dir, tmp_path):
    from cyclegan.train import main

    out = tmp_path / "run"
    args = tiny_args(train_shards, out, "--optim.epochs", "1", "--optim.decay_epoch", "0", "--train.eval_every", "1",
                     "--train.eval_segmenter", str(segmenter_dir))  # fmt: skip
    assert main(args) == 0
    evaluations = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "eval/mean_iou" in r]
    assert len(evaluations) == 1
    for name in ("pixel_acc", "class_acc", "miou"):
        assert 0 <= evaluations[0][f"eval/seg2real_seg_{name}"] <= 1


def test_training_refuses_a_foreign_segmenter_at_start(train_shards, tmp_path, capsys):
    from cyclegan.train import main

    foreign = tmp_path / "cityscapes"
    tiny_segformer(dict(enumerate(CITYSCAPES))).save_pretrained(foreign)
    args = tiny_args(train_shards, tmp_path / "run", "--train.eval_every", "1", "--train.eval_segmenter", str(foreign))
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"cyclegan-train: error: train.eval_segmenter: {foreign}: not an ADE20K-150 segmenter")
    assert not list((tmp_path / "run").glob("*_gen_*.pt"))
    with pytest.raises(ConfigError, match="train.eval_segmenter .* set train.eval_every"):
        load_config(overrides=["--train.eval_segmenter", str(foreign)])
