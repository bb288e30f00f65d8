import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from gen_fixtures import (
    HIGH_CLASS,
    LOW_CLASS,
    block_labels,
    colour,
    export_class_generators,
    export_generators,
    photo_for,
    predicted_for,
    two_colour_generator,
    write_evil_pickle,
    write_shards,
)
from PIL import Image
from torch import nn

from cyclegan import evaluate
from cyclegan.checkpoint import CheckpointError, export_network
from cyclegan.evaluate import (
    INCEPTION_FILE,
    accumulate_confusion,
    confusion_matrix,
    evaluate_segmentation,
    segmentation_scores,
    tracker_metrics,
)
from cyclegan.generate import main as generate_main
from cyclegan.inference import from_uint8
from cyclegan.models import Discriminator


def scores_of(pred, target) -> dict:
    return segmentation_scores(confusion_matrix(torch.tensor(pred), torch.tensor(target)))


# --- metrics on hand-made cases ------------------------------------------------------------------


def test_perfect_prediction():
    target = [[1, 1, 2, 0], [3, 3, 3, 0]]
    s = scores_of(target, target)
    assert (s["pixel_acc"], s["mean_class_acc"], s["mean_iou"]) == (1.0, 1.0, 1.0)
    assert s["classes_present"] == 3 and s["labelled_pixels"] == 6
    assert s["per_class_iou"][:3] == [1.0, 1.0, 1.0] and math.isnan(s["per_class_iou"][3])


def test_all_wrong():
    s = scores_of([[2, 2, 1, 1]], [[1, 1, 2, 2]])
    assert (s["pixel_acc"], s["mean_class_acc"], s["mean_iou"]) == (0.0, 0.0, 0.0)


def test_partial_by_hand():
    # labelled pixels: 1,1,1 -> 1,1,2 and 2,2 -> 2,3; the 0-labelled pixel (predicted 5) is ignored
    s = scores_of([1, 1, 2, 2, 3, 5], [1, 1, 1, 2, 2, 0])
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    assert s["per_class_acc"][:2] == pytest.approx([2 / 3, 1 / 2])
    assert s["mean_class_acc"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s["per_class_iou"][:2] == pytest.approx([2 / 3, 1 / 3])  # 2/(3+2-2), 1/(2+2-1)
    assert s["mean_iou"] == pytest.approx(1 / 2)


def test_classes_absent_from_ground_truth_are_not_averaged():
    # class 3 is only predicted: it costs class 1 a pixel but has no IoU of its own
    s = scores_of([1, 3, 2, 2], [1, 1, 2, 2])
    assert s["classes_present"] == 2
    assert math.isnan(s["per_class_iou"][2]) and math.isnan(s["per_class_acc"][2])
    assert s["mean_iou"] == pytest.approx((1 / 2 + 1) / 2)
    assert s["gt_pixels"][:3] == [2, 2, 0]


def test_predicting_unlabeled_counts_as_wrong_and_all_ignored_is_nan():
    s = scores_of([0, 1], [1, 1])
    assert s["pixel_acc"] == 0.5 and s["mean_iou"] == 0.5
    empty = scores_of([1, 2], [0, 0])
    assert empty["classes_present"] == 0 and math.isnan(empty["pixel_acc"]) and math.isnan(empty["mean_iou"])


def test_confusion_matches_brute_force_and_sums_over_batches():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 151, (3, 17, 23), generator=gen)
    pred = torch.where(torch.rand(3, 17, 23, generator=gen) < 0.5, target, torch.randint(0, 151, (3, 17, 23)))
    expected = np.zeros((151, 151), np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist(), strict=True):
        if t != 0:
            expected[t, p] += 1
    full = confusion_matrix(pred, target)
    assert full.dtype == torch.int64 and np.array_equal(full.numpy(), expected)
    assert torch.equal(sum(confusion_matrix(p, t) for p, t in zip(pred, target, strict=True)), full)


def test_out_of_range_ids_are_refused():
    with pytest.raises(ValueError, match="0..150"):
        confusion_matrix(torch.tensor([151]), torch.tensor([1]))


# --- evaluate_segmentation, the function training calls ----------------------------------------


def expected_scores(labels: list[np.ndarray]) -> dict:
    pred = torch.cat([torch.from_numpy(predicted_for(x)).flatten() for x in labels])
    target = torch.cat([torch.from_numpy(x).flatten() for x in labels])
    return segmentation_scores(confusion_matrix(pred, target))


def test_evaluate_segmentation_on_training_batches():
    """Odd sizes (padded to /4 and cropped back), batches of two, training mode restored."""
    generator = two_colour_generator(colour(HIGH_CLASS), colour(LOW_CLASS)).train()
    labels = [block_labels(30, 42, seed=i) for i in range(4)]
    batches = [
        {
            "photo": torch.stack([from_uint8(torch.from_numpy(photo_for(x)).permute(2, 0, 1)) for x in pair]),
            "label": torch.stack([torch.from_numpy(x).long() for x in pair]),
        }
        for pair in (labels[:2], labels[2:])
    ]
    scores = evaluate_segmentation(generator, batches, "cpu")
    np.testing.assert_equal(scores, expected_scores(labels))  # NaN == NaN here
    assert 0 < scores["mean_iou"] < 1 and scores["classes_present"] == 3  # class 5 always wrong
    assert generator.training
    flat = tracker_metrics(scores)
    assert flat["eval/mean_iou"] == scores["mean_iou"] and "eval/iou/bookcase" in flat and "eval/iou/wall" not in flat


def test_predictions_are_mapped_to_the_label_size():
    generator = two_colour_generator(colour(HIGH_CLASS), colour(LOW_CLASS))
    labels = block_labels(32, 32, seed=0)
    photo = from_uint8(torch.from_numpy(photo_for(labels)).permute(2, 0, 1))[None]
    half = torch.from_numpy(labels[::2, ::2].copy()).long()[None]  # label at half the photo's size
    confusion = accumulate_confusion(generator, [{"photo": photo, "label": half}], "cpu")
    assert confusion.sum() == (half != 0).sum()


# --- command line: segmentation --------------------------------------------------------------------


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    return export_generators(tmp_path_factory.mktemp("gens"))


SIZES = [(48, 64), (32, 32), (30, 42), (64, 40), (40, 56)]


def test_eval_cli_scores_and_json(generators, tmp_path, capsys):
    labels = [block_labels(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    pattern = write_shards(tmp_path / "shards", [(photo_for(x), x) for x in labels])
    report_path = tmp_path / "report.json"
    assert evaluate.main(["--generator", str(generators[0]), "--shards", pattern, "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "mean IoU" in out and "bookcase" in out and "(means over the 3/150 classes" in out
    report = json.loads(report_path.read_text())
    expected = expected_scores(labels)
    assert report["images"] == 5 and report["role"] == "real2seg" and report["epoch"] == 3
    for key in ("pixel_acc", "mean_class_acc", "mean_iou", "classes_present", "labelled_pixels", "gt_pixels"):
        assert report[key] == expected[key], key
    assert report["per_class_iou"][HIGH_CLASS - 1] == 1.0 and report["per_class_iou"][4] == 0.0
    assert report["per_class_iou"][0] is None and report["class_names"][0] == "wall"

    assert evaluate.main(["--generator", str(generators[0]), "--shards", pattern, "--limit", "2"]) == 0
    assert "on 2 image(s)" in capsys.readouterr().out

    tiled_path = tmp_path / "tiled.json"  # exact tiles (8 px: 2 a side at the generator's 1/4 resolution)
    assert evaluate.main(["--generator", str(generators[0]), "--shards", pattern, "--tile", "8",
                          "--json", str(tiled_path)]) == 0  # fmt: skip
    tiled = json.loads(tiled_path.read_text())
    assert {k: v for k, v in tiled.items() if k != "settings"} == {k: v for k, v in report.items() if k != "settings"}


def test_eval_reads_a_shard_folder_like_the_trainer(generators, train_shards, tmp_path, capsys):
    """--shards takes the folder cyclegan-shard wrote (its manifest's split), and scores exactly what the
    brace pattern of that split's tars scores."""
    manifest = json.loads((train_shards / "manifest.json").read_text())
    stems = [name.removesuffix(".tar") for name in manifest["splits"]["validation"]["shards"]]
    pattern = f"{train_shards}/{stems[0]}.tar" if len(stems) == 1 else f"{train_shards}/{{{','.join(stems)}}}.tar"
    reports = []
    for shards in (["--shards", str(train_shards)], ["--shards", pattern],
                   ["--shards", str(train_shards), "--split", "training"]):  # fmt: skip
        path = tmp_path / f"r{len(reports)}.json"
        assert evaluate.main(["--generator", str(generators[0]), *shards, "--json", str(path)]) == 0
        reports.append(json.loads(path.read_text()))
    folder, brace, training = reports
    assert "(split validation)" in capsys.readouterr().out
    assert (folder["split"], brace["split"], training["split"]) == ("validation", None, "training")
    assert folder["images"] == manifest["splits"]["validation"]["samples"] == 4
    assert training["images"] == manifest["splits"]["training"]["samples"] == 16
    assert {k: v for k, v in folder.items() if k not in ("shards", "split")} == {
        k: v for k, v in brace.items() if k not in ("shards", "split")
    }
    for args, needle in [
        (["--shards", str(train_shards), "--split", "test"], "no split 'test' (has: "),
        (["--shards", str(tmp_path), "--split", "validation"], "manifest.json: not found"),
        (["--shards", pattern, "--split", "training"], "--split training: only with a shard folder"),
    ]:
        assert evaluate.main(["--generator", str(generators[0]), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cyclegan-eval: error: ") and err.count("\n") == 1 and needle in err, err


def test_eval_of_unpaired_shards_scores_their_validation_pairs_only(generators, unpaired_shards, capsys):
    """Scoring needs each photo's own map: an unpaired training split is refused in one line, and the
    default (validation) split of the same folder, which stays paired, is scored."""
    assert evaluate.main(["--generator", str(generators[0]), "--shards", str(unpaired_shards), "--split",
                          "training"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.startswith("cyclegan-eval: error: ") and err.count("\n") == 1, err
    assert "split 'training' is unpaired" in err and "scoring needs a paired split" in err
    assert evaluate.main(["--generator", str(generators[0]), "--shards", str(unpaired_shards)]) == 0
    assert "(split validation)" in capsys.readouterr().out


def test_generate_then_eval_round_trip(generators, tmp_path, capsys):
    """label maps -> cyclegan-generate (seg -> photo) -> shards -> cyclegan-eval (photo -> seg): perfect."""
    labels = [block_labels(48, 64, seed=i, classes=(0, HIGH_CLASS, LOW_CLASS)) for i in range(3)]
    for i, x in enumerate(labels):
        Image.fromarray(x).save(tmp_path / f"map{i}.png")
    code = generate_main(
        [
            "--input",
            str(tmp_path / "map*.png"),
            "--generator",
            str(generators[1]),
            "--output-dir",
            str(tmp_path / "gen"),
        ]
        + ["--width", "64", "--height", "48"]
    )
    assert code == 0
    photos = [np.array(Image.open(tmp_path / "gen" / f"map{i}_photo.png")) for i in range(3)]
    pattern = write_shards(tmp_path / "shards", list(zip(photos, labels, strict=True)))
    assert (
        evaluate.main(["--generator", str(generators[0]), "--shards", pattern, "--json", str(tmp_path / "r.json")]) == 0
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["pixel_acc"], report["mean_class_acc"], report["mean_iou"]) == (1.0, 1.0, 1.0)
    assert report["classes_present"] == 2 and report["images"] == 3


# --- FID -----------------------------------------------------------------------------------------


class Identity(nn.Module):
    """Features in, features out: FID over given vectors."""

    num_features = 8

    def forward(self, x):
        return x


def test_fid_math_matches_scipy_on_gaussians():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (500, 8))
    b = rng.normal(0.5, 1.0, (400, 8)) @ rng.normal(0, 0.6, (8, 8))
    mu_a, mu_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real)
    fid = FrechetInceptionDistance(feature=Identity())
    fid.update(torch.from_numpy(a), real=True)
    fid.update(torch.from_numpy(b[:200]), real=False)
    fid.update(torch.from_numpy(b[200:]), real=False)
    assert fid.compute().item() == pytest.approx(expected, rel=1e-6)


def test_fid_cli_runs_with_local_weights(generators, inception_weights, tmp_path, capsys):
    labels = [block_labels(32, 32, seed=i) for i in range(3)]
    pattern = write_shards(tmp_path / "shards", [(photo_for(x), x) for x in labels])
    args = ["--generator", str(generators[1]), "--shards", pattern, "--json", str(tmp_path / "fid.json")]
    assert evaluate.main(args + ["--inception-weights", str(inception_weights)]) == 0
    report = json.loads((tmp_path / "fid.json").read_text())
    assert math.isfinite(report["fid"]) and report["images"] == 3 and report["role"] == "seg2real"
    assert "FID" in capsys.readouterr().out


def test_seg2real_without_weights_scores_l1_and_psnr_and_says_how_to_get_fid(generators, tmp_path, capsys):
    """The hand-built seg2real draws HIGH_CLASS (red 255 in the training palette) white, LOW_CLASS and
    unlabeled (red 0) black; photo_for draws HIGH_CLASS and unlabeled 200, LOW_CLASS 40: off by 55/255 on
    HIGH_CLASS, 200/255 on unlabeled and 40/255 on LOW_CLASS."""
    labels = [block_labels(32, 32, seed=i, classes=(0, HIGH_CLASS, LOW_CLASS)) for i in range(3)]
    pattern = write_shards(tmp_path / "shards", [(photo_for(x), x) for x in labels])
    code = evaluate.main(["--generator", str(generators[1]), "--shards", pattern, "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 0 and err.count("\n") == 1
    assert INCEPTION_FILE in err and "--inception-weights" in err and "https://" in err
    report = json.loads((tmp_path / "r.json").read_text())
    errors = [np.select([x == HIGH_CLASS, x == 0], [55.0, 200.0], 40.0) / 255 for x in labels]
    assert report["photo_l1"] == pytest.approx(np.mean([e.mean() for e in errors]), abs=2e-3)  # JPEG: ~exact
    psnr = np.mean([-10 * np.log10((e**2).mean()) for e in errors])
    assert report["photo_psnr"] == pytest.approx(psnr, abs=0.05) and "fid" not in report
    tiled = tmp_path / "tiled.json"
    args = ["--generator", str(generators[1]), "--shards", pattern, "--tile", "16", "--json", str(tiled)]
    assert evaluate.main(args) == 0
    assert json.loads(tiled.read_text())["photo_l1"] == pytest.approx(report["photo_l1"], abs=1e-6)


class MidGrey(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3, *x.shape[2:])


def test_photo_scores_by_hand():
    """A constant mid-grey 'translation' of black photos: L1 0.5 and MSE 0.25 on [0, 1], PSNR 6.02 dB."""
    batches = [{"photo": -torch.ones(2, 3, 8, 8), "label": torch.zeros(2, 8, 8, dtype=torch.long)}]
    scores = evaluate.evaluate_photos(MidGrey(), batches, "cpu")
    assert scores["photo_l1"] == pytest.approx(0.5)
    assert scores["photo_psnr"] == pytest.approx(-10 * math.log10(0.25))


@pytest.fixture(scope="module")
def class_generators(tmp_path_factory):
    return export_class_generators(tmp_path_factory.mktemp("class_gens"))


def test_classes_mode_exports_are_scored_by_their_argmax(class_generators, tmp_path, capsys):
    """The same known predictions as the rgb generator's, read as argmax ids, no colour snapping; and a
    classes-mode seg2real run (generate) and real2seg scored on its photos (eval) round-trip exactly."""
    labels = [block_labels(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    pattern = write_shards(tmp_path / "shards", [(photo_for(x), x) for x in labels])
    assert evaluate.main(["--generator", str(class_generators[0]), "--shards", pattern,
                          "--json", str(tmp_path / "r.json")]) == 0  # fmt: skip
    assert "classes mode" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    expected = expected_scores(labels)
    assert report["seg_mode"] == "classes"
    for key in ("pixel_acc", "mean_class_acc", "mean_iou", "classes_present", "gt_pixels"):
        assert report[key] == expected[key], key

    maps = [block_labels(48, 64, seed=i, classes=(0, HIGH_CLASS, LOW_CLASS)) for i in range(3)]
    for i, x in enumerate(maps):
        Image.fromarray(x).save(tmp_path / f"map{i}.png")
    assert generate_main(["--input", str(tmp_path / "map*.png"), "--generator", str(class_generators[1]),
                          "--output-dir", str(tmp_path / "gen"), "--width", "64", "--height", "48"]) == 0  # fmt: skip
    photos = [np.array(Image.open(tmp_path / "gen" / f"map{i}_photo.png")) for i in range(3)]
    pattern = write_shards(tmp_path / "round", list(zip(photos, maps, strict=True)))
    assert evaluate.main(["--generator", str(class_generators[0]), "--shards", pattern,
                          "--json", str(tmp_path / "round.json")]) == 0  # fmt: skip
    round_trip = json.loads((tmp_path / "round.json").read_text())
    assert (round_trip["pixel_acc"], round_trip["mean_iou"]) == (1.0, 1.0)
    # seg -> photo of classes mode: its photos are white on {unlabeled, HIGH_CLASS}, like photo_for's light grey
    assert evaluate.main(["--generator", str(class_generators[1]), "--shards", pattern,
                          "--json", str(tmp_path / "photo.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "photo.json").read_text())["photo_l1"] < 1e-3  # its own photos back


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_inception_files_are_refused(tmp_path):
    evil = write_evil_pickle(tmp_path / "evil.pth", tmp_path / "pwned")
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        evaluate.load_fid(evil, "cpu")
    assert not (tmp_path / "pwned").exists()
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match="wrong.pth: not the FID Inception weights"):
        evaluate.load_fid(wrong, "cpu")


# --- command line: bad input ---------------------------------------------------------------------


def test_eval_cli_errors_are_one_line(generators, tmp_path, capsys):
    disc = export_network(Discriminator(ndf=8), "seg", tmp_path / "seg_disc_3.pt", epoch=3)
    empty = write_shards(tmp_path / "shards", [])
    cases = [
        (
            ["--generator", str(generators[0]), "--shards", str(tmp_path / "missing-{000000..000001}.tar")],
            "missing-000000.tar",
        ),
        (["--generator", str(disc), "--shards", empty], "is a discriminator"),
        (["--generator", str(generators[0]), "--shards", empty, "--limit", "0"], "--limit"),
        (["--generator", str(generators[0]), "--shards", empty], "no samples"),
    ]
    for args, needle in cases:
        assert evaluate.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("cyclegan-eval: error: ") and err.count("\n") == 1 and needle in err, err
