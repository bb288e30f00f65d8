"""No host sync in a non-logging step: the training loop's reads of device values, counted on the CPU.

On a GPU a read of a device value into Python (``.item()``, ``.tolist()``, ``.numpy()``, ``bool(t)``)
makes the host wait for the device; so do some ops whose output size depends on the data
(``nonzero``, ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``). On a
CPU they cost nothing, but they are the same calls, so counting them here finds every sync the
loop would make on a GPU. The count covers the step and everything the loop does between steps;
the loader's own iteration is left out (it runs ahead, in worker processes and threads).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch.utils._python_dispatch import TorchDispatchMode
from train_helpers import make_shards, tiny_args

from cyclegan.config import load_config
from cyclegan.trainer import Trainer

aten = torch.ops.aten
SYNCING_OPS = {
    aten._local_scalar_dense, aten.is_nonzero, aten.equal, aten.allclose, aten.nonzero, aten.masked_select,
    aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.unique_dim_consecutive,
}  # fmt: skip


class SyncCounter(TorchDispatchMode):
    """Records each host-syncing call made while ``active``, with where it came from."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.events: list[str] = []

    def record(self, what: str) -> None:
        if self.active:
            frame = next((f for f in reversed(traceback.extract_stack()[:-2]) if "cyclegan" in f.filename), None)
            self.events.append(f"{what} at {frame.filename}:{frame.lineno}" if frame else what)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in SYNCING_OPS or (packet is aten.repeat_interleave and kwargs.get("output_size") is None):
            self.record(str(packet))
        return func(*args, **kwargs)


class CountBetweenBatches:
    """A loader whose batches ``start``..``start+count-1`` switch the counter on until the loop asks
    for the next batch: what is counted is the loop's own work, never the loader's."""

    def __init__(self, inner, counter: SyncCounter, start: int, count: int) -> None:
        self.inner, self.counter, self.start, self.count = inner, counter, start, count
        self.counted_steps = 0

    def __getattr__(self, name: str):  # everything but epoch() is the real loader's
        return getattr(self.inner, name)

    def epoch(self, epoch: int, skip_batches: int = 0):
        batches = iter(self.inner.epoch(epoch, skip_batches))
        number = 0
        while True:
            self.counter.active = False
            batch = next(batches, None)
            if batch is None:
                return
            self.counter.active = self.start <= number < self.start + self.count
            self.counted_steps += self.counter.active
            number += 1
            yield batch


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shards(tmp_path_factory.mktemp("sync_data"))


def count_syncs(shards: Path, out: Path, host_skip: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], int]:
    """Syncs in steps 3-6 of a run of 7 steps, none of which logs or checks."""
    args = tiny_args(shards, out, "--train.max_steps", "7", "--train.log_every", "100",
                     "--train.stop_check_every", "100")  # fmt: skip
    cfg = load_config(None, args)
    counter = SyncCounter()
    for name in ("tolist", "numpy"):  # .item(), bool() and float() dispatch _local_scalar_dense
        real = getattr(torch.Tensor, name)

        def reading(self, *a, _real=real, _name=name, **k):
            counter.record(f"Tensor.{_name}")
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, reading)
    try:
        trainer = Trainer(cfg, Accelerator(cpu=True))
        if host_skip:  # the positive control: the step without fused kernels decides on the host
            trainer.step.device_skip = False
        trainer.loader = CountBetweenBatches(trainer.loader, counter, start=2, count=4)
        with counter:
            outcome = trainer.fit()
        trainer.close()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert outcome == "reached train.max_steps=7"
    return counter.events, trainer.loader.counted_steps


def test_non_logging_steps_never_read_the_device(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    events, steps = count_syncs(shards, tmp_path, host_skip=False, monkeypatch=monkeypatch)
    assert steps == 4
    assert events == []


def test_the_counter_sees_a_host_decided_skip(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    events, steps = count_syncs(shards, tmp_path, host_skip=True, monkeypatch=monkeypatch)
    assert steps == 4
    assert len(events) == 4 and all("step.py" in e for e in events), events
