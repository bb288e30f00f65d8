import torch

from cyclegan import palette


def test_class_names_and_sizes():
    assert len(palette.CLASS_NAMES) == palette.NUM_CLASSES == 150
    assert palette.CLASS_NAMES[0] == "wall" and palette.CLASS_NAMES[6] == "road"
    assert palette.TRAIN_PALETTE.shape == palette.DISPLAY_PALETTE.shape == (151, 3)
    assert palette.class_labels()[0] == "unlabeled" and palette.class_labels()[150] == palette.CLASS_NAMES[-1]


def test_display_palette_is_ambiguous_but_training_palette_is_not():
    display = {tuple(c) for c in palette.DISPLAY_PALETTE.tolist()}
    assert len(display) < 151  # road and skyscraper share a colour
    colours = palette.TRAIN_PALETTE.float()
    dist = torch.cdist(colours, colours) + torch.eye(151) * 1e9
    assert dist.min().item() >= 51


def test_round_trip_exact():
    ids = torch.arange(151).view(1, 151, 1).expand(2, 151, 3)
    assert torch.equal(palette.rgb_to_ids(palette.ids_to_rgb(ids)), ids)
    assert torch.equal(palette.seg_to_ids(palette.ids_to_seg(ids)), ids)


def test_ids_to_seg_range_and_layout():
    seg = palette.ids_to_seg(torch.tensor([[0, 1]]))
    assert seg.shape == (3, 1, 2)
    assert seg.min() >= -1 and seg.max() <= 1
    assert torch.equal(seg[:, 0, 0], torch.tensor([-1.0, -1.0, -1.0]))  # unlabeled is black


def test_chunked_decode_matches_single_chunk():
    rgb = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    assert torch.equal(palette.rgb_to_ids(rgb, chunk=100), palette.rgb_to_ids(rgb, chunk=1 << 20))


def test_integer_ids_required():
    try:
        palette.ids_to_rgb(torch.zeros(2, 2))
    except TypeError as e:
        assert "integer" in str(e)
    else:
        raise AssertionError("float ids accepted")
