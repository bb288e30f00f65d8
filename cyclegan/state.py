"""The training state: every stateful part of a run, by name, in one mapping.

Shaped after torchtitan's checkpointing: each part has ``state_dict``/``load_state_dict``, a
``TrainState`` holds the counters, and ``checkpoint.CheckpointManager`` saves and loads the whole
mapping, so adding a part is one entry in ``Trainer.parts`` and saving and loading cannot drift
apart. Parts named in ``PER_RANK`` differ between processes (each writes its own); the others are
the same on every process (the main process writes them once).

This module also decides what a resume may change (``check_resume_config``): a change to the data
order, the LR curve or the model is refused, a change to cadence or logging goes through with a note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from cyclegan.config import Config, ConfigError, flatten, from_dict, to_dict
from cyclegan.losses import CycleGANModels

PER_RANK = frozenset({"photo_buffer", "seg_buffer", "rng"})


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    """Where the run is: epochs done, steps into the current epoch (the data position, since the
    loader's order is a function of the epoch and the world size) and steps in all. The world
    size that got there is in the checkpoint's commit."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            if f.name in state:
                setattr(self, f.name, int(state[f.name]))


class ModelsState:
    """The four networks' weights, by role (the unwrapped modules, never DDP's or compile's)."""

    def __init__(self, models: CycleGANModels) -> None:
        self.models = models

    def state_dict(self) -> dict[str, Any]:
        return {name: module.state_dict() for name, module in vars(self.models).items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, module in vars(self.models).items():
            module.load_state_dict(state[name])


class OptimizerState:
    """An optimizer whose kernel choice (fused or not) is this run's, not the saved run's."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
        for group in self.optimizer.param_groups:
            group["fused"] = self.optimizer.defaults["fused"]


class ScalerState:
    """The fp16 loss scale (absent in bf16 and fp32 runs: saved as None, nothing to load)."""

    def __init__(self, scaler: Any | None) -> None:
        self.scaler = scaler

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


class RNGState:
    """This process's torch generators (CPU and, where present, CUDA). The loaders and replay
    buffers draw from generators of their own, saved with them."""

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


@dataclass
class WandbState:
    """The W&B run to continue after a resume (None: none yet, or W&B off)."""

    run_id: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")


# What a resume may change. Every config field is in exactly one list (a test checks it), so a
# new field has to be placed. REFUSED: the data order or position, the LR curve, the objective or
# the model would differ from what the checkpoint continues. ALLOWED: cadence, logging,
# performance settings and paths; they take effect with a one-line note.
REFUSED = (
    "seed",
    "model.n_residual_blocks", "model.ngf", "model.ndf", "model.seg_mode", "model.seg_embed",
    "model.gumbel_temperature", "model.gumbel_noise",
    "data.train_split", "data.paired", "data.load_size", "data.crop_size", "data.flip",
    "data.batch_size", "data.sample_size", "data.epoch_length",
    "optim.lr", "optim.lr_scaling", "optim.lr_reference_batch", "optim.beta1", "optim.beta2",
    "optim.epochs", "optim.decay_epoch", "optim.lambda_cycle", "optim.lambda_identity", "optim.replay_size",
    "optim.lambda_cycle_seg", "optim.lambda_paired",
    "train.precision",
)  # fmt: skip
ALLOWED = (
    "data.shards",  # the path may move; its content is compared by the manifest's fingerprint
    "data.loader",  # both loaders read the same order; their random crops and flips differ
    "data.val_split", "data.num_workers",
    "train.out_dir", "train.compile", "train.compile_mode", "train.channels_last", "train.resume",
    "train.force_resume", "train.checkpoint_every_steps", "train.keep_checkpoints", "train.export_every",
    "train.keep_exports", "train.max_nonfinite_steps", "train.log_every", "train.stop_check_every",
    "train.dist_timeout_s", "train.eval_every", "train.inception_weights", "train.num_samples", "train.max_steps",
    "train.eval_segmenter",
    "train.ema_decay",  # the average is not fed back into training; a change applies from the next step
    "train.export_ema",
    "wandb.mode", "wandb.project", "wandb.entity", "wandb.name", "wandb.log_artifacts",
)  # fmt: skip


def check_resume_config(
    saved: dict[str, Any], current: Config, saved_fingerprint: str | None, fingerprint: str | None, where: str
) -> list[str]:
    """Compare a checkpoint's config with this run's; return the notes to print.

    Raises ``ConfigError`` naming the first refused field and both values, unless
    ``train.force_resume`` is set (then the refusals become notes too). Fields an older
    checkpoint does not have count as their defaults."""
    try:
        old = flatten(to_dict(from_dict(saved)))
    except ConfigError as e:
        raise ConfigError(f"{where}: its saved config is not one this version reads ({e})") from None
    new = flatten(to_dict(current))
    changed = [key for key in new if old.get(key) != new[key]]
    refused = [f"{key}: checkpoint has {old.get(key)!r}, this run {new[key]!r}" for key in changed if key in REFUSED]
    if saved_fingerprint and fingerprint and saved_fingerprint != fingerprint:
        refused.append(f"data.shards: the shards' manifest differs from the checkpoint's ({fingerprint[:12]} vs "
                       f"{saved_fingerprint[:12]}): not the same dataset")  # fmt: skip
    notes = [f"resume changes {key}: {old.get(key)!r} -> {new[key]!r}" for key in changed if key in ALLOWED]
    if refused and not current.train.force_resume:
        raise ConfigError(
            f"{where}: cannot resume: {refused[0]}"
            + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else "")
            + "; this would silently change the run. Use the saved value, a fresh train.out_dir, "
            "or --train.force_resume true"
        )
    return notes + [f"resume forced despite {r}" for r in refused]
