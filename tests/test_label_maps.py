"""Map images -> class ids: each encoding, JPEG snapping against the ids the maps were drawn from,
unknown colours, the duplicate colour, and --palette auto."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cyclegan.bench.maps import edge_distance
from cyclegan.data.synthetic import scene_labels
from cyclegan.label_maps import MapDecoder, NotAMap, describe_duplicates, duplicate_colours, guess_palette
from cyclegan.palette import DISPLAY_PALETTE, TRAIN_PALETTE

ADE150 = DISPLAY_PALETTE.numpy()


def reopen(image: Image.Image, fmt: str, **params: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    opened.load()
    return opened


def tiling(height: int, width: int, classes: np.ndarray, seed: int) -> np.ndarray:
    """Random regions (nearest of a few seed points), one class each."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, (len(classes), 2)) * [height, width]
    y, x = np.mgrid[0:height, 0:width]
    owner = ((y[..., None] - points[:, 0]) ** 2 + (x[..., None] - points[:, 1]) ** 2).argmin(-1)
    return classes[owner].astype(np.uint8)


def every_class_but_the_duplicate(height: int = 96, width: int = 128) -> np.ndarray:
    """All 150 classes and unlabeled except skyscraper (49, which shares road's colour), plus
    single pixels of some classes, in one map."""
    classes = np.array([c for c in range(151) if c != 49])
    ids = tiling(height, width, classes, seed=0)
    ids[::17, ::13] = np.resize(classes[::-1], ids[::17, ::13].shape)
    return ids


def test_png_colour_maps_decode_exactly() -> None:
    ids = every_class_but_the_duplicate()
    assert len(np.unique(ids)) > 120
    decoded, pixels = MapDecoder("ade150").decode(reopen(Image.fromarray(ADE150[ids]), "PNG"))
    np.testing.assert_array_equal(decoded, ids)
    assert (pixels.pixels, pixels.snapped, pixels.filled, pixels.unknown) == (ids.size, 0, 0, 0)


def test_the_duplicate_colour_decodes_as_road() -> None:
    assert duplicate_colours() == [((140, 140, 140), [7, 49])]
    assert "(140, 140, 140) decodes as 7 road, never 49 skyscraper" in describe_duplicates()
    ids = np.full((16, 16), 49, dtype=np.uint8)
    ids[:, :8] = 7
    decoded, _ = MapDecoder("ade150").decode(reopen(Image.fromarray(ADE150[ids]), "PNG"))
    assert (decoded == 7).all()


def nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """The baseline: each pixel's nearest display-palette colour (lowest id on a tie), as
    |c|^2 - 2 x.c per palette colour c: exact in float64 for 8-bit colours, without an H x W x 151 x 3 array."""
    palette = ADE150.astype(np.float64)
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    return ((palette**2).sum(1) - 2 * pixels @ palette.T).argmin(1).reshape(rgb.shape[:2])


@pytest.mark.parametrize(("height", "width", "worst_edge_px"), [(256, 341, 8), (512, 683, 2)])
def test_jpeg_quality_90_colour_maps(height: int, width: int, worst_edge_px: int) -> None:
    """The stated snapping (label_maps notes, README): >= 99.5 % of pixels right at 256x341 and
    99.8 % at ADE20K's own size, every wrong pixel near a region edge, nothing skipped; plain
    nearest-colour decoding is clearly worse on the same files."""
    rng = np.random.default_rng(3)
    right = nearest_right = total = 0
    for _ in range(3):
        ids = scene_labels(rng, height, width)
        image = reopen(Image.fromarray(ADE150[ids]), "JPEG", quality=90)
        decoded, pixels = MapDecoder("ade150").decode(image)
        wrong = decoded != ids
        assert not wrong.any() or edge_distance(ids)[wrong].max() <= worst_edge_px
        assert pixels.snapped > 0 and pixels.unknown < 0.001 * ids.size
        nearest = nearest_colour(np.asarray(image))
        right += int((~wrong).sum())
        nearest_right += int((nearest == ids).sum())
        total += ids.size
    assert right / total >= (0.995 if height < 512 else 0.998)
    assert right / total - nearest_right / total > 0.005


def test_jpeg_tiling_of_many_close_colours() -> None:
    """Classes 10 and 99 are 7.1 apart, 84 and 109 11 apart (saturated reds, JPEG's noisiest): in one
    JPEG they still decode apart, far better than by nearest colour (measured 0.977 vs 0.948)."""
    ids = tiling(256, 256, np.array([10, 99, 84, 109, 3, 5]), seed=1)
    image = reopen(Image.fromarray(ADE150[ids]), "JPEG", quality=90)
    decoded, _ = MapDecoder("ade150").decode(image)
    nearest = nearest_colour(np.asarray(image))
    assert (decoded == ids).mean() > 0.97 and (decoded == ids).mean() - (nearest == ids).mean() > 0.02
    assert set(np.unique(decoded)) == {10, 99, 84, 109, 3, 5}


def test_a_map_in_another_palette_is_refused_naming_its_colours() -> None:
    ids = tiling(64, 64, np.array([1, 2, 3, 4]), seed=2)
    foreign = TRAIN_PALETTE.numpy()[ids]
    with pytest.raises(NotAMap) as error:
        MapDecoder("ade150").decode(reopen(Image.fromarray(foreign), "PNG"))
    message = str(error.value)
    assert message.startswith("not a segmentation map in the ade150 palette: 100.0% of pixels")
    most_common = np.bincount(ids.ravel()).argmax()
    assert "({}, {}, {})".format(*TRAIN_PALETTE[most_common].tolist()) in message.split("most common: ")[1][:20]


def test_few_unknown_pixels_are_filled_or_counted_and_many_refused() -> None:
    ids = tiling(128, 128, np.array([1, 2, 3]), seed=4)
    colours = ADE150[ids].copy()
    colours[60:72, 60:72] = (77, 1, 200)  # 144 pixels (0.9 %) in no palette colour
    decoded, pixels = MapDecoder("ade150").decode(reopen(Image.fromarray(colours), "PNG"))
    assert pixels.filled + pixels.unknown == 144 and pixels.snapped == 0
    outside = np.ones(ids.shape, dtype=bool)
    outside[60:72, 60:72] = False
    np.testing.assert_array_equal(decoded[outside], ids[outside])
    assert set(np.unique(decoded[~outside])) <= set(np.unique(ids[56:76, 56:76])) | {0}

    colours[40:80, 40:80] = (77, 1, 200)  # 1600 pixels: the centre stays unknown, 2.2 % > 1 %
    with pytest.raises(NotAMap, match=r"in no palette colour \(more than 1.0%\); most common: \(77, 1, 200\)"):
        MapDecoder("ade150").decode(reopen(Image.fromarray(colours), "PNG"))
    decoded, pixels = MapDecoder("ade150", max_unknown=0.05).decode(reopen(Image.fromarray(colours), "PNG"))
    assert pixels.unknown > 0 and (decoded[56:64, 56:64] == 0).all()


def test_id_maps() -> None:
    ids = every_class_but_the_duplicate(32, 48)
    decoder = MapDecoder("ids")
    for image in (
        Image.fromarray(ids),  # L
        Image.fromarray(ids.astype(np.uint16)),  # I;16
        Image.fromarray(np.stack([ids] * 3, -1)),  # grey stored as RGB
        Image.fromarray(ids).convert("P"),  # palette-indexed: the indices are the ids
    ):
        decoded, _ = decoder.decode(reopen(image, "PNG"))
        np.testing.assert_array_equal(decoded, ids, err_msg=image.mode)
    with pytest.raises(NotAMap, match="cannot be read from a JPEG"):
        decoder.decode(reopen(Image.fromarray(ids), "JPEG", quality=95))
    with pytest.raises(NotAMap, match=r"is a colour image \(RGB\)"):
        decoder.decode(reopen(Image.fromarray(ADE150[ids]), "PNG"))
    with pytest.raises(NotAMap, match="label value 200 > 150"):
        decoder.decode(reopen(Image.fromarray(np.full((4, 4), 200, np.uint8)), "PNG"))


def test_full_release_maps() -> None:
    lut = np.zeros(26 * 256, dtype=np.uint8)
    lut[2978] = 1  # wall in the full release -> 1
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (2978 // 256 * 10 + 3, 2978 % 256, 7)  # R's units and B (instance) are ignored
    decoder = MapDecoder("full", class_lut=lut)
    decoded, _ = decoder.decode(reopen(Image.fromarray(rgb), "PNG"))
    np.testing.assert_array_equal(decoded, np.repeat([[1], [1], [0], [0]], 4, axis=1))
    with pytest.raises(NotAMap, match="does not survive JPEG"):
        decoder.decode(reopen(Image.fromarray(rgb), "JPEG"))
    with pytest.raises(ValueError, match="class map goes with the full palette"):
        MapDecoder("full")
    with pytest.raises(ValueError, match="palette must be one of"):
        MapDecoder("coco")


def test_palette_auto() -> None:
    ids = tiling(64, 64, np.array([1, 5, 9, 13]), seed=5)
    colour_png = reopen(Image.fromarray(ADE150[ids]), "PNG")
    colour_jpg = reopen(Image.fromarray(ADE150[ids]), "JPEG", quality=90)
    grey = reopen(Image.fromarray(ids), "PNG")
    indexed = reopen(Image.fromarray(ids).convert("P"), "PNG")
    grey_rgb = reopen(Image.fromarray(np.stack([ids] * 3, -1)), "PNG")
    other = reopen(Image.fromarray(TRAIN_PALETTE.numpy()[ids]), "PNG")
    assert guess_palette([colour_png, colour_jpg, grey], False, 0.01) == ("ade150", "2 of 3 sampled maps fit")
    assert guess_palette([grey, indexed, grey_rgb], False, 0.01) == ("ids", "3 of 3 sampled maps fit")
    assert guess_palette([other, other], True, 0.01)[0] == "full"
    with pytest.raises(NotAMap, match="none of 2 sampled maps.*--palette full --class-map"):
        guess_palette([other, other], False, 0.01)
