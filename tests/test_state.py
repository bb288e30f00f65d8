"""What a resume may change, and how replay buffers are dealt out to another world size."""

import pytest
import torch

from cyclegan.config import ConfigError, flatten, load_config, to_dict
from cyclegan.scheduler import BufferDealer, ReplayBuffer
from cyclegan.state import ALLOWED, REFUSED, check_resume_config


def test_every_config_field_is_placed_in_exactly_one_list():
    fields = set(flatten(to_dict(load_config())))
    assert set(REFUSED) | set(ALLOWED) == fields
    assert not set(REFUSED) & set(ALLOWED)


def test_allowed_changes_pass_with_a_note_and_missing_fields_are_defaults():
    saved = to_dict(load_config(overrides=["--train.log_every", "7"]))
    del saved["train"]["dist_timeout_s"]  # an older checkpoint: the field did not exist yet (= default 600)
    notes = check_resume_config(saved, load_config(), "abc", "abc", "ck")
    assert notes == ["resume changes train.log_every: 7 -> 50"]
    assert check_resume_config(saved, load_config(overrides=["--train.log_every", "7"]), None, None, "ck") == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--data.batch_size", "4"], "data.batch_size: checkpoint has 1, this run 4"),
        (["--optim.decay_epoch", "50"], "optim.decay_epoch: checkpoint has 100, this run 50"),
        (["--model.ngf", "32"], "model.ngf: checkpoint has 64, this run 32"),
        (["--train.precision", "bf16"], "train.precision: checkpoint has 'no', this run 'bf16'"),
    ],
)
def test_changes_that_would_alter_the_run_are_refused_naming_both_values(override, message):
    saved = to_dict(load_config())
    with pytest.raises(ConfigError, match=message) as e:
        check_resume_config(saved, load_config(overrides=override), None, None, "ck/step_1")
    assert str(e.value).startswith("ck/step_1: cannot resume: ") and "\n" not in str(e.value)
    forced = check_resume_config(saved, load_config(overrides=[*override, "--train.force_resume", "true"]),
                                 None, None, "ck")  # fmt: skip
    assert any(message in note for note in forced)


def test_other_shards_are_refused_by_fingerprint():
    saved = to_dict(load_config())
    with pytest.raises(ConfigError, match="data.shards: the shards' manifest differs"):
        check_resume_config(saved, load_config(), "a" * 64, "b" * 64, "ck")


def _buffer(values: list[float], size: int = 4) -> dict:
    buffer = ReplayBuffer(size, seed=0)
    buffer.push_and_pop(torch.tensor(values).view(-1, 1, 1, 1))
    return buffer.state_dict()


def deal_buffers(states: list[dict], rank: int, world_size: int, seed: int) -> dict:
    dealer = BufferDealer(rank, world_size)
    for state in states:
        dealer.add(state)
    return dealer.state_dict(seed)


def test_buffers_are_dealt_round_robin_to_the_new_world_size():
    old = [_buffer([0, 1, 2]), _buffer([3, 4, 5, 6])]  # two processes' buffers
    shares = [deal_buffers(iter(old), rank, 3, seed=rank) for rank in range(3)]
    got = [s["items"].flatten().tolist() for s in shares]
    assert got == [[0, 3, 6], [1, 4], [2, 5]]
    merged = deal_buffers(iter(old), 0, 1, seed=0)  # 2 -> 1: capacity 4 of the 7 stored fakes
    assert merged["items"].flatten().tolist() == [0, 1, 2, 3] and bool(merged["valid"].all())
    fresh = ReplayBuffer(4)
    fresh.load_state_dict(merged)
    assert len(fresh) == 4
