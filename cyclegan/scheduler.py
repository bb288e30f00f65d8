"""Learning-rate rule and the discriminators' replay buffer (Shrivastava et al., 2017)."""

from __future__ import annotations

import random
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
    otherwise the new one is returned. Decisions are drawn on the host from the buffer's own
    ``random.Random`` (no device value is ever read, and a resumed run replays the same choices
    from ``state_dict``); what is stored is decided on the device: a fake whose ``keep`` flag is
    False (a skipped step) or that has a non-finite pixel leaves its slot as it was, and a slot
    that never received a finite fake is never returned.
    """

    def __init__(self, max_size: int = 50, seed: int = 0) -> None:
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self.max_size = max_size
        self.random = random.Random(seed)
        self.items: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self.count = 0
        """Slots visited so far (filled in order); a visited slot may still be invalid."""

    def __len__(self) -> int:
        return self.count

    def _allocate(self, like: torch.Tensor) -> None:
        if self.items is None:
            self.items = torch.zeros((self.max_size, *like.shape[1:]), dtype=like.dtype, device=like.device)
            self.valid = torch.zeros(self.max_size, dtype=torch.bool, device=like.device)
        elif self.items.device != like.device or self.items.dtype != like.dtype:  # after a resume
            self.items = self.items.to(device=like.device, dtype=like.dtype)
            self.valid = self.valid.to(like.device)

    @torch.no_grad()
    def push_and_pop(self, fakes: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Return a batch the size of ``fakes``, mixing new and stored fakes.

        ``keep``: a bool tensor on the device (0-dim, or one per fake); False stores nothing."""
        fakes = fakes.detach()
        if self.max_size == 0:
            return fakes
        self._allocate(fakes)
        ok = torch.isfinite(fakes).flatten(1).all(1)
        if keep is not None:
            ok = ok & keep
        out = fakes.clone()
        fill = min(fakes.shape[0], self.max_size - self.count)
        if fill:  # the filling phase: consecutive slots, one write
            slots = slice(self.count, self.count + fill)
            mask = ok[:fill].view(-1, *[1] * (fakes.ndim - 1))
            self.items[slots] = torch.where(mask, fakes[:fill], self.items[slots])
            self.valid[slots] = ok[:fill]
            self.count += fill
        for i in range(fill, fakes.shape[0]):
            swap, pick = self.random.random() > 0.5, self.random.randrange(self.max_size)
            if swap:
                stored = self.items[pick].clone()
                out[i] = torch.where(self.valid[pick], stored, fakes[i])
                self.items[pick] = torch.where(ok[i], fakes[i], stored)
                self.valid[pick] |= ok[i]
        return out

    def state_dict(self) -> dict[str, Any]:
        items = None if self.items is None else self.items[: self.count].cpu()
        valid = None if self.valid is None else self.valid[: self.count].cpu()
        return {"max_size": self.max_size, "rng": self.random.getstate(), "items": items, "valid": valid}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["max_size"] != self.max_size:
            raise ValueError(f"replay buffer size mismatch: saved {state['max_size']}, configured {self.max_size}")
        if isinstance(state["rng"], torch.Tensor):
            # Written before 2026-12 by a torch.Generator: continue from a seed derived from that state.
            # The weights resume exactly; only the replay draws differ from an uninterrupted old run.
            self.random = random.Random(state["rng"].numpy().tobytes())
        else:
            self.random.setstate(state["rng"])
        items = state["items"]
        self.count = 0 if items is None else items.shape[0]
        self.items = self.valid = None
        if items is not None:
            self.items = torch.zeros((self.max_size, *items.shape[1:]), dtype=items.dtype)
            self.items[: self.count] = items
            self.valid = torch.zeros(self.max_size, dtype=torch.bool)
            self.valid[: self.count] = state["valid"] if state.get("valid") is not None else True


class BufferDealer:
    """Builds a buffer state for process ``rank`` of ``world_size`` from the buffers of a run on
    another world size: their stored fakes, fed in rank order (``add``, one old buffer at a time, so
    only one is in memory at once), dealt round-robin, so every new process gets an equal share up
    to its capacity; ``state_dict`` gives it a fresh random stream from ``seed``."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.picked: list[torch.Tensor] = []
        self.offset = self.max_size = 0

    def add(self, state: dict[str, Any]) -> None:
        self.max_size = state["max_size"]
        items = state["items"]
        if items is None:
            return
        if state.get("valid") is not None:
            items = items[state["valid"]]
        first = (self.rank - self.offset) % self.world_size
        self.picked.append(items[first :: self.world_size])
        self.offset += items.shape[0]

    def state_dict(self, seed: Any) -> dict[str, Any]:
        items = torch.cat(self.picked)[: self.max_size] if self.picked else None
        valid = None if items is None else torch.ones(items.shape[0], dtype=torch.bool)
        return {"max_size": self.max_size, "rng": random.Random(seed).getstate(), "items": items, "valid": valid}
