"""The generators' moving average: its arithmetic, its warm-up, and its place in the training state."""

import pytest
import torch
from torch import nn

from cyclegan import checkpoint
from cyclegan.ema import GeneratorEMA, ema_decay_at


def one_weight(value: float) -> nn.Module:
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(value)
    return module


def test_update_by_hand():
    """decay 0.5 from 0: step 1 keeps 2/11 of the average (the warm-up), step 2 keeps 3/12."""
    raw = one_weight(0.0)
    ema = GeneratorEMA({"g": raw}, decay=0.5)
    with torch.no_grad():
        raw.weight.fill_(1.0)
        ema.update(1)
        assert ema.averages["g"].weight.item() == pytest.approx(9 / 11)  # 2/11 * 0 + 9/11 * 1
        raw.weight.fill_(3.0)
        ema.update(2)
        assert ema.averages["g"].weight.item() == pytest.approx(27 / 11)  # 1/4 * 9/11 + 3/4 * 3
    assert (ema_decay_at(0.5, 100), ema_decay_at(0.999, 0)) == (0.5, 0.1)  # the cap; the first update
    assert not ema.averages["g"].weight.requires_grad and not ema.averages["g"].training
    assert raw.weight.item() == 3.0  # the trained weights are only read


def test_warm_up_forgets_the_initial_weights():
    """The demo's 480 steps at decay 0.999: a fixed decay would keep 0.999**480 = 62 % of the initial
    weights; with the warm-up what is left of them is negligible."""
    raw = one_weight(0.0)
    ema = GeneratorEMA({"g": raw}, decay=0.999)
    with torch.no_grad():
        raw.weight.fill_(1.0)
    for step in range(1, 481):
        ema.update(step)
    assert ema.averages["g"].weight.item() > 0.999


def test_a_checkpoint_without_averages_starts_them_from_the_trained_weights(tmp_path):
    """The state fixtures predate EMA: loading them gives averages equal to the loaded weights."""
    saved_raw = one_weight(5.0)
    manager = checkpoint.CheckpointManager(tmp_path, rank=0, world_size=1, keep=1, per_rank=frozenset())
    folder = manager.save({"g": saved_raw}, step=3, meta={"train": {"epoch": 0, "step_in_epoch": 3, "global_step": 3}})
    raw = one_weight(0.0)
    ema = GeneratorEMA({"g": raw}, decay=0.9)
    raw.weight.data.fill_(1.0)  # the average was made from other weights than those to be loaded
    parts = {"g": raw, "ema": ema}
    manager.load(checkpoint.open_checkpoint(folder), parts)
    assert raw.weight.item() == 5.0 and ema.averages["g"].weight.item() == 5.0


def test_decay_outside_its_range_is_refused():
    with pytest.raises(ValueError, match="EMA decay must be in"):
        GeneratorEMA({"g": one_weight(0.0)}, decay=1.0)
