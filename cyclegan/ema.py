"""Exponential moving averages of the generators' weights, updated on the device every step.

After step t (counting from 1) each averaged tensor moves towards the trained one:

    avg <- d_t * avg + (1 - d_t) * raw,    d_t = min(decay, (1 + t) / (10 + t))

The warm-up term lets the average forget the initial weights early on; with a fixed 0.999 the
average after the demo's 480 steps would still hold 0.999**480 = 62 % of them. The whole update
is one ``torch._foreach_lerp_`` over every tensor of both generators, with ``d_t`` computed on
the host from the step count: no device value is read. Buffers (none in these networks, which
use affine-free InstanceNorm) would be copied, not averaged.

Every process keeps its own copy. The raw weights are the same on every process after each step
(DDP all-reduces the gradients and every process applies the same update), so the copies stay
equal, and each process can sample and score its share of the validation split with the averaged
generators without a broadcast; the cost is two extra generator copies per process (about 92 MB
in fp32 at ngf 64). The averages are part of the training state, written once, by the main process.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_decay_at(decay: float, step: int) -> float:
    """The weight of the old average after update number ``step`` (1, 2, ...)."""
    return min(decay, (1 + step) / (10 + step))


class GeneratorEMA:
    """Averaged copies of ``sources`` (name -> trained module), in eval mode and without gradients."""

    def __init__(self, sources: dict[str, nn.Module], decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.sources = sources
        self.averages = {name: copy.deepcopy(module).requires_grad_(False).eval() for name, module in sources.items()}
        self._raw = [p for m in sources.values() for p in m.parameters()]
        self._avg = [p for m in self.averages.values() for p in m.parameters()]
        self._raw_buffers = [b for m in sources.values() for b in m.buffers()]
        self._avg_buffers = [b for m in self.averages.values() for b in m.buffers()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the trained weights after optimisation step ``step``; queues device work only."""
        torch._foreach_lerp_(self._avg, self._raw, 1.0 - ema_decay_at(self.decay, step))
        if self._avg_buffers:
            torch._foreach_copy_(self._avg_buffers, self._raw_buffers)

    @torch.no_grad()
    def reset(self) -> None:
        """Start the averages from the trained weights (a resume from a checkpoint that has none)."""
        torch._foreach_copy_(self._avg + self._avg_buffers, self._raw + self._raw_buffers)

    def state_dict(self) -> dict[str, Any]:
        return {name: module.state_dict() for name, module in self.averages.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in self.averages.items():
            module.load_state_dict(state[name])

    def load_absent(self) -> None:
        """Called by the checkpoint loader when the saved state has no averages."""
        self.reset()
