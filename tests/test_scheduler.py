import pytest
import torch

from cyclegan.scheduler import ReplayBuffer, linear_decay


def lrs(n_epochs: int, decay_epoch: int, start_epoch: int, steps: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(n_epochs, decay_epoch, start_epoch))
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_paper_schedule_200_epochs():
    values = lrs(200, 100, 0, 200)
    assert values[0] == values[99] == 1.0
    assert values[100] == 1.0  # decay starts after epoch 100's start
    assert values[150] == pytest.approx(0.5)
    assert values[199] == pytest.approx(1 / 100)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(
    "n_epochs,decay_epoch,start_epoch",
    [(10, 5, 0), (10, 5, 3), (10, 5, 7), (10, 0, 0), (4, 3, 2)],
)
def test_later_start_continues_the_same_curve(n_epochs, decay_epoch, start_epoch):
    full = lrs(n_epochs, decay_epoch, 0, n_epochs)
    assert lrs(n_epochs, decay_epoch, start_epoch, n_epochs - start_epoch) == pytest.approx(full[start_epoch:])


def test_chosen_values():
    assert lrs(10, 5, 0, 10, lr=2e-4)[7] == pytest.approx(2e-4 * (1 - 2 / 5))
    assert lrs(10, 0, 0, 10)[5] == pytest.approx(0.5)


@pytest.mark.parametrize("n_epochs,decay_epoch", [(10, 10), (10, 12), (10, -1)])
def test_bad_decay_epoch(n_epochs, decay_epoch):
    with pytest.raises(ValueError, match="decay_epoch"):
        linear_decay(n_epochs, decay_epoch)


def batch(value: float, n: int = 2) -> torch.Tensor:
    return torch.full((n, 3, 2, 2), value)


def test_buffer_fills_then_mixes():
    buf = ReplayBuffer(max_size=4, seed=0)
    assert torch.equal(buf.push_and_pop(batch(1.0)), batch(1.0))
    assert torch.equal(buf.push_and_pop(batch(2.0)), batch(2.0))
    assert len(buf) == 4
    seen_old = 0
    for step in range(3, 40):
        out = buf.push_and_pop(batch(float(step)))
        assert out.shape == (2, 3, 2, 2)
        values = out[:, 0, 0, 0].tolist()
        assert all(v == step or v < step for v in values)
        seen_old += sum(v < step for v in values)
    # Each item is swapped with probability 0.5: about half of the 74 returned are old.
    assert 20 < seen_old < 55


def test_buffer_zero_size_is_passthrough():
    buf = ReplayBuffer(max_size=0)
    x = torch.randn(3, 3, 2, 2, requires_grad=True)
    out = buf.push_and_pop(x)
    assert torch.equal(out, x) and not out.requires_grad


def test_buffer_exact_replay_after_state_round_trip():
    a = ReplayBuffer(max_size=5, seed=3)
    for step in range(6):
        a.push_and_pop(batch(float(step)))
    b = ReplayBuffer(max_size=5, seed=99)
    b.load_state_dict(a.state_dict())
    for step in range(6, 30):
        assert torch.equal(a.push_and_pop(batch(float(step))), b.push_and_pop(batch(float(step))))


def test_buffer_state_size_mismatch():
    with pytest.raises(ValueError, match="size mismatch"):
        ReplayBuffer(max_size=3).load_state_dict(ReplayBuffer(max_size=5).state_dict())
