"""model.seg_mode classes: one-hot maps, the straight-through sample, the cross-entropy terms, the
uint8 replay store; and that the rgb encoding is the seed's behaviour."""

import math

import pytest
import torch

from cyclegan.models import Generator
from cyclegan.palette import TRAIN_PALETTE, ids_to_seg
from cyclegan.scheduler import ReplayBuffer
from cyclegan.seg_encoding import (
    ClassEncoding,
    RgbEncoding,
    encoding_for,
    masked_cross_entropy,
    mode_of_export,
    one_hot,
    straight_through_sample,
)


def test_one_hot_by_hand_and_in_either_layout():
    ids = torch.tensor([[[0, 5], [150, 5]]])
    for layout in (torch.contiguous_format, torch.channels_last):
        x = one_hot(ids, memory_format=layout)
        assert x.shape == (1, 151, 2, 2) and x.is_contiguous(memory_format=layout)
        assert x.sum(1).eq(1).all()
        assert x[0, 0, 0, 0] == 1 and x[0, 5, 0, 1] == 1 and x[0, 150, 1, 0] == 1 and x[0, 5, 1, 1] == 1


def test_straight_through_sample_is_one_hot_forward_with_a_gradient_into_g():
    torch.manual_seed(0)
    g = Generator(3, 151, n_residual_blocks=1, ngf=8, head="logits")
    photo = torch.rand(2, 3, 16, 16) * 2 - 1
    sample = straight_through_sample(g(photo), temperature=1.0)
    # forward: exactly 0 or 1, one 1 per pixel (not merely close: hard + (soft - soft) is hard)
    assert set(sample.unique().tolist()) == {0.0, 1.0} and sample.sum(1).eq(1).all()
    # backward: a loss on the sample (what D_seg and F compute) reaches G's weights
    (sample * torch.randn_like(sample)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.decoder[-1].parameters())
    assert g.encoder[1].weight.grad.abs().sum() > 0


def test_the_sample_follows_the_logits_and_the_noise():
    logits = torch.zeros(1, 151, 4, 4)
    logits[:, 7] = 50.0  # a margin no Gumbel draw at temperature 1 overturns (P < 1e-20)
    assert straight_through_sample(logits, 1.0).argmax(1).eq(7).all()
    flat = torch.zeros(1, 151, 32, 32)  # no preference: the noise picks, so many classes appear
    assert straight_through_sample(flat, 1.0).argmax(1).unique().numel() > 100


def test_lower_temperature_gives_a_sharper_gradient():
    torch.manual_seed(1)
    logits = torch.randn(1, 151, 8, 8)
    grads = []
    for t in (1.0, 0.25):
        x = logits.clone().requires_grad_(True)
        torch.manual_seed(2)  # the same Gumbel noise for both
        (straight_through_sample(x, t) * torch.linspace(-1, 1, 151)[None, :, None, None]).sum().backward()
        grads.append(x.grad.abs().max().item())
    assert grads[1] > grads[0]


def test_cross_entropy_terms_by_hand():
    logits = torch.zeros(1, 151, 1, 2)
    logits[0, 5, 0, 1] = 3.0
    ids = torch.tensor([[[0, 5]]])  # pixel 0 unlabeled and uniform, pixel 1 class 5 with logit 3
    uniform = math.log(151)
    peaked = math.log(1 + 150 * math.exp(-3.0))  # -log(e^3 / (e^3 + 150))
    classes = ClassEncoding()
    # cycle: every pixel, unlabeled included
    assert classes.cycle_loss(logits, {"label": ids}).item() == pytest.approx((uniform + peaked) / 2)
    # paired: the unlabeled pixel has no ground truth
    assert classes.paired_loss(logits, {"label": ids}).item() == pytest.approx(peaked)
    all_unlabeled = masked_cross_entropy(logits, torch.zeros(1, 1, 2, dtype=torch.long), ignore=0)
    assert all_unlabeled.item() == 0.0  # not NaN: such a crop must not skip the step


def test_replay_store_is_lossless_uint8():
    classes = ClassEncoding()
    ids = torch.randint(0, 151, (3, 16, 16))
    fake = one_hot(ids)
    stored = classes.store(fake)
    assert stored.dtype == torch.uint8 and stored.shape == (3, 16, 16)
    assert torch.equal(classes.restore(stored), fake)
    buffer = ReplayBuffer(4, seed=0)
    for _ in range(3):
        out = classes.restore(buffer.push_and_pop(stored)).argmax(1)
        assert all(any(torch.equal(o, i) for i in ids) for o in out)  # each one of the fakes, intact
    assert buffer.items.dtype == torch.uint8 and buffer.items.numel() == 4 * 16 * 16  # 1 byte a pixel
    assert buffer.state_dict()["items"].dtype == torch.uint8  # and so in every checkpoint


def test_ids_pictures_and_inputs_of_both_modes():
    ids = torch.randint(0, 151, (2, 8, 8))
    rgb, classes = RgbEncoding(), ClassEncoding()
    assert torch.equal(rgb.ids(rgb.from_ids(ids)), ids)  # palette colours decode back
    assert torch.equal(classes.ids(classes.from_ids(ids)), ids)
    logits = torch.randn(2, 151, 8, 8)
    picture = classes.picture(logits)
    assert picture.shape == (2, 3, 8, 8) and torch.equal(picture, ids_to_seg(logits.argmax(1)).float())
    assert torch.equal(((picture[0, :, 0, 0] + 1) * 127.5).round().byte(), TRAIN_PALETTE[logits[0, :, 0, 0].argmax()])
    assert torch.equal(classes.hard(logits), one_hot(logits.argmax(1)))
    assert rgb.coloured and not classes.coloured


def test_modes_by_name_and_from_export_metadata():
    assert encoding_for("rgb").mode == "rgb" and encoding_for("classes", 0.5).temperature == 0.5
    with pytest.raises(ValueError, match="seg_mode"):
        encoding_for("palette")
    assert mode_of_export({"role": "real2seg"}) == "rgb"  # files from before classes mode existed
    assert mode_of_export({"seg_mode": "classes"}) == "classes"


def test_sample_grid_views_in_classes_mode():
    """Maps are drawn as their argmax in the palette; F(G(photo)) is F of G's argmax as a one-hot map."""
    from cyclegan.logging import GRID_COLUMNS, sample_grid, translate_samples

    torch.manual_seed(0)
    g = Generator(3, 151, n_residual_blocks=1, ngf=8, head="logits").eval()
    f = Generator(151, 3, n_residual_blocks=1, ngf=8, embed_channels=8).eval()
    batch = {"photo": torch.rand(2, 3, 32, 32) * 2 - 1, "label": torch.randint(0, 151, (2, 32, 32))}
    views = translate_samples(g, f, batch, ClassEncoding())
    assert list(views) == list(GRID_COLUMNS) and all(v.shape == (2, 3, 32, 32) for v in views.values())
    with torch.no_grad():
        logits = g(batch["photo"])
        assert torch.equal(views["G(photo)"], ids_to_seg(logits.argmax(1)).float())
        assert torch.equal(views["F(G(photo))"], f(one_hot(logits.argmax(1))))
    assert torch.equal(views["seg"], ids_to_seg(batch["label"]).float())
    assert sample_grid(views).shape == (3, 2 * 34 + 2, 6 * 34 + 2)


def test_noise_0_is_the_straight_through_argmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 151, 8, 8, requires_grad=True)
    sample = straight_through_sample(logits, 0.5, noise=0.0)
    assert torch.equal(sample.detach(), one_hot(logits.argmax(1)))  # deterministic: no noise drawn
    sample.sum().backward()
    assert logits.grad is not None
