"""Learning-rate rule and the discriminators' replay buffer (Shrivastava et al., 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def linear_decay(n_epochs: int, decay_epoch: int, start_epoch: int = 0) -> Callable[[int], float]:
    """LR factor for ``torch.optim.lr_scheduler.LambdaLR``, stepped once per epoch.

    During epoch ``e`` (0-based) the factor is ``1 - max(0, e - decay_epoch) /
    (n_epochs - decay_epoch)``: 1 until ``decay_epoch``, then falling linearly so it would
    reach 0 at epoch ``n_epochs``, the end of training. ``start_epoch`` shifts the
    scheduler's own counter when a fresh scheduler starts a run at a later epoch (a
    scheduler restored from a state dict already carries its count: pass 0 then).
    """
    if not 0 <= decay_epoch < n_epochs:
        raise ValueError(f"decay_epoch must be in [0, n_epochs), got {decay_epoch} with n_epochs={n_epochs}")
    if start_epoch < 0:
        raise ValueError(f"start_epoch must be >= 0, got {start_epoch}")

    def factor(step: int) -> float:
        epoch = step + start_epoch
        return 1.0 - max(0, epoch - decay_epoch) / (n_epochs - decay_epoch)

    return factor


class ReplayBuffer:
    """History of generated images shown to the discriminator.

    For each new fake: while the buffer is filling it is stored and returned; afterwards,
    with probability 0.5 a random stored fake is returned and replaced by the new one,
    otherwise the new one is returned. Decisions come from the buffer's own CPU generator
    (no device syncs, and a resumed run replays the same choices from ``state_dict``).
    """

    def __init__(self, max_size: int = 50, seed: int = 0) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self.max_size = max_size
        self.generator = torch.Generator().manual_seed(seed)
        self.items: torch.Tensor | None = None
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def push_and_pop(self, fakes: torch.Tensor) -> torch.Tensor:
        """Return a batch the size of ``fakes``, mixing new and stored fakes."""
        if self.max_size == 0:
            return fakes.detach()
        fakes = fakes.detach()
        if self.items is None:
            self.items = torch.empty((self.max_size, *fakes.shape[1:]), dtype=fakes.dtype, device=fakes.device)
        elif self.items.device != fakes.device or self.items.dtype != fakes.dtype:
            self.items = self.items.to(device=fakes.device, dtype=fakes.dtype)  # after a resume
        out = fakes.clone()
        coins = torch.rand(fakes.shape[0], generator=self.generator).tolist()
        picks = torch.randint(self.max_size, (fakes.shape[0],), generator=self.generator).tolist()
        for i, (coin, pick) in enumerate(zip(coins, picks, strict=True)):
            if self.count < self.max_size:
                self.items[self.count] = fakes[i]
                self.count += 1
            elif coin > 0.5:
                out[i] = self.items[pick]
                self.items[pick] = fakes[i]
        return out

    def state_dict(self) -> dict[str, Any]:
        items = None if self.items is None else self.items[: self.count].cpu()
        return {"max_size": self.max_size, "rng": self.generator.get_state(), "items": items}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["max_size"] != self.max_size:
            raise ValueError(f"replay buffer size mismatch: saved {state['max_size']}, configured {self.max_size}")
        self.generator.set_state(state["rng"])
        items = state["items"]
        self.count = 0 if items is None else items.shape[0]
        self.items = None
        if items is not None:
            self.items = torch.empty((self.max_size, *items.shape[1:]), dtype=items.dtype)
            self.items[: self.count] = items
