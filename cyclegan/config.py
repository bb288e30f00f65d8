"""One typed configuration tree, filled from a YAML file and dotted command-line overrides.

    cyclegan-train --config configs/ade20k.yaml --optim.lr 1e-4 --train.precision bf16

Every field has a default (the CycleGAN paper's where it has one), a YAML file sets any
subset, and ``--section.field value`` overrides on the command line win over both. The
resolved tree is validated once, printed by the trainer and saved with each checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    n_residual_blocks: int = 9
    """Residual blocks in each generator's translator (paper: 9 at 256 px)."""
    ngf: int = 64
    """Filters in the generators' first layer."""
    ndf: int = 64
    """Filters in the discriminators' first layer."""
    seg_mode: str = "rgb"
    """rgb | classes. rgb: G draws the map in the training palette (3 channels through tanh) and
    its colours are decoded to classes by nearest colour. classes: G predicts 151 class logits per
    pixel (0 = unlabeled); F and D_seg read one-hot class maps through a learned 1x1 embedding."""
    seg_embed: int = 16
    """classes mode: channels of the 1x1 embedding F and D_seg put in front of their first layer."""
    gumbel_temperature: float = 1.0
    """classes mode: temperature of the softmax whose gradient the straight-through sample passes back
    (what D_seg and F see of G's logits is one-hot in the forward pass)."""
    gumbel_noise: float = 0.0
    """classes mode: scale of the Gumbel noise added to G's logits before the one-hot sample: 1 is the
    Gumbel-softmax sample, 0 the straight-through argmax (deterministic; better in the README's measurement)."""


@dataclass
class DataConfig:
    shards: str = "data/shards"
    """Directory written by cyclegan-shard (holds manifest.json and the tars)."""
    train_split: str = "training"
    """Split trained on."""
    val_split: str = "validation"
    """Split the sample grids and evaluation use."""
    loader: str = "auto"
    """auto | dali | torch. auto takes DALI when it imports and runs here."""
    paired: bool = False
    """False: photos and segmentation maps come from independently shuffled streams
    (the CycleGAN setting). True: photo i and map i are the same image, same crop."""
    load_size: int = 286
    """The short side is resized to this before cropping (paper: 286)."""
    crop_size: int = 256
    """Side of the square random crop trained on (paper: 256)."""
    flip: bool = True
    """Random horizontal flips."""
    batch_size: int = 1
    """Pairs per process and step (paper: 1)."""
    num_workers: int = 4
    """Decoding threads (DALI) or worker processes (torch fallback) per process."""
    sample_size: int = 0
    """Cap on samples per epoch, over all processes; 0 = the whole split."""


@dataclass
class OptimConfig:
    lr: float = 2e-4
    """Adam learning rate of generators and discriminators at the reference batch (see lr_scaling)."""
    lr_scaling: str = "none"
    """none | sqrt | linear: at a global batch B (data.batch_size x processes) train with
    lr * (B / lr_reference_batch) ** (1/2 | 1). sqrt is the square-root rule for Adam."""
    lr_reference_batch: int = 1
    """The global batch at which optim.lr is meant (the paper's: 1)."""
    beta1: float = 0.5
    beta2: float = 0.999
    epochs: int = 200
    """Total epochs (paper: 100 constant + 100 decaying)."""
    decay_epoch: int = 100
    """Epoch at which the learning rate starts its linear decay to 0."""
    lambda_cycle: float = 10.0
    """Weight of both cycle-consistency terms (in classes mode, of the photo cycle only)."""
    lambda_cycle_seg: float = 1.0
    """classes mode: weight of the segmentation cycle, a cross-entropy between G(F(y)) and y's class
    ids over every pixel, unlabeled included (it starts near ln 151 = 5, where an L1 starts near 0.5)."""
    lambda_paired: float = 0.0
    """With data.paired: weight of the supervised terms on aligned crops, cross-entropy of G(photo)
    against the label (unlabeled pixels ignored; in rgb mode an L1 to the coloured map) and L1 of
    F(seg) against the photo. 0 (default): pure CycleGAN."""
    lambda_identity: float = 0.0
    """Identity weight as a fraction of lambda_cycle (the paper's photo<->painting runs: 0.5).
    Off by default, as in the paper's labels<->photo runs: "G(seg) = seg" has no clear meaning
    when the two domains are a photo and a label map, and the two extra generator passes cost
    about a third of a step's FLOPs (1.879 vs 1.287 TFLOP per pair at 256 px)."""
    replay_size: int = 50
    """Fakes kept per discriminator in its replay buffer; 0 disables it."""


@dataclass
class TrainConfig:
    out_dir: str = "runs/ade20k"
    """Where generator/discriminator files, sample grids and checkpoints go."""
    precision: str = "no"
    """no | bf16 | fp16 autocast (fp16 uses loss scaling)."""
    compile: bool = False
    """torch.compile the four networks."""
    compile_mode: str = "default"
    """torch.compile mode: default, or max-autotune (searches kernels; slow first steps)."""
    channels_last: bool = False
    """NHWC memory format. Off: InstanceNorm returns NCHW, so every norm layer converts the
    layout back and forth (2-10 % slower on CPU; to be measured on a GPU)."""
    resume: str = ""
    """'' = fresh run, 'auto' = latest checkpoint in out_dir/checkpoints if any, or a path."""
    force_resume: bool = False
    """Resume even where the config differs from the checkpoint's in a field that changes the data
    order, the LR curve or the model (refused otherwise, with the field and both values)."""
    checkpoint_every_steps: int = 0
    """Also save training state every N steps (0: only at epoch ends)."""
    keep_checkpoints: int = 3
    """Training-state checkpoints kept (oldest deleted first)."""
    export_every: int = 10
    """Generator/discriminator files of every epoch are written; of the older ones only every
    export_every-th epoch's are kept (the newest always is). 1 keeps all (113 MB an epoch at ngf/ndf 64)."""
    keep_exports: int = 0
    """How many of the every-export_every-th epochs' files to keep, newest first (0: all)."""
    dist_timeout_s: int = 600
    """Seconds a collective (gradient all-reduce, checkpoint agreement) waits for the other
    processes before the run fails with "lost contact" instead of hanging."""
    max_nonfinite_steps: int = 10
    """Abort after this many consecutive steps with a non-finite loss (each is skipped; the count
    lives on the device and is read every stop_check_every steps)."""
    log_every: int = 50
    """Steps between metric logs (losses are synced to the host only then)."""
    stop_check_every: int = 10
    """Steps between the checks, agreed by all processes, for a stop request (SIGTERM/SIGUSR1)
    and for too many non-finite steps: each check is one host sync. 10 steps is well under a
    second at 256 px on a current GPU, far inside the ~30 s a cluster waits before SIGKILL."""
    eval_every: int = 0
    """Epochs between evaluations on the validation split (0: never)."""
    inception_weights: str = ""
    """FID Inception weights file; when set, evaluations also report seg -> photo FID."""
    num_samples: int = 4
    """Validation items drawn in each epoch's sample grid."""
    max_steps: int = 0
    """Stop after this many steps in total (0: run all epochs); for smoke tests and benchmarks."""


@dataclass
class WandbConfig:
    mode: str = "disabled"
    """online | offline | disabled (disabled never imports wandb)."""
    project: str = "cyclegan-ade20k"
    entity: str = ""
    name: str = ""
    """Run name; empty lets W&B choose."""


@dataclass
class Config:
    seed: int = 0
    """Seeds weights, data order, augmentation and replay buffers."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


CHOICES = {
    "model.seg_mode": ("rgb", "classes"),
    "data.loader": ("auto", "dali", "torch"),
    "optim.lr_scaling": ("none", "sqrt", "linear"),
    "train.precision": ("no", "bf16", "fp16"),
    "train.compile_mode": ("default", "max-autotune"),
    "wandb.mode": ("online", "offline", "disabled"),
}


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (file/key and what is wrong)."""


def _coerce(value: Any, kind: Any, key: str) -> Any:
    if isinstance(kind, str):  # postponed annotations
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and not isinstance(value, bool):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except (TypeError, ValueError):
            pass
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")


def _apply(node: Any, updates: dict[str, Any], prefix: str = "") -> None:
    names = {f.name: f for f in dataclasses.fields(node)}
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in names:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(names))})")
        current = getattr(node, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of fields, got {value!r}")
            _apply(current, value, f"{key}.")
        else:
            setattr(node, name, _coerce(value, names[name].type, key))


def validate(cfg: Config) -> Config:
    """Reject settings that cannot work, before any process group or file is touched."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) not in allowed:
            raise ConfigError(f"{key}: must be one of {', '.join(allowed)}")
    positive = {
        "model.n_residual_blocks": cfg.model.n_residual_blocks,
        "model.ngf": cfg.model.ngf,
        "model.ndf": cfg.model.ndf,
        "model.seg_embed": cfg.model.seg_embed,
        "data.batch_size": cfg.data.batch_size,
        "data.crop_size": cfg.data.crop_size,
        "optim.epochs": cfg.optim.epochs,
        "optim.lr_reference_batch": cfg.optim.lr_reference_batch,
        "train.keep_checkpoints": cfg.train.keep_checkpoints,
        "train.max_nonfinite_steps": cfg.train.max_nonfinite_steps,
        "train.log_every": cfg.train.log_every,
        "train.stop_check_every": cfg.train.stop_check_every,
        "train.export_every": cfg.train.export_every,
        "train.dist_timeout_s": cfg.train.dist_timeout_s,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    non_negative = {
        "data.num_workers": cfg.data.num_workers,
        "data.sample_size": cfg.data.sample_size,
        "optim.replay_size": cfg.optim.replay_size,
        "optim.lambda_identity": cfg.optim.lambda_identity,
        "optim.lambda_cycle": cfg.optim.lambda_cycle,
        "optim.lambda_cycle_seg": cfg.optim.lambda_cycle_seg,
        "optim.lambda_paired": cfg.optim.lambda_paired,
        "train.checkpoint_every_steps": cfg.train.checkpoint_every_steps,
        "train.eval_every": cfg.train.eval_every,
        "train.num_samples": cfg.train.num_samples,
        "train.max_steps": cfg.train.max_steps,
        "train.keep_exports": cfg.train.keep_exports,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    if cfg.data.crop_size % 4 or cfg.data.crop_size < 32:
        raise ConfigError(f"data.crop_size: must be a multiple of 4 and >= 32, got {cfg.data.crop_size}")
    if cfg.data.load_size < cfg.data.crop_size:
        raise ConfigError(f"data.load_size ({cfg.data.load_size}) must be >= data.crop_size ({cfg.data.crop_size})")
    if not 0 <= cfg.optim.decay_epoch < cfg.optim.epochs:
        raise ConfigError(
            f"optim.decay_epoch: must be in [0, optim.epochs={cfg.optim.epochs}), got {cfg.optim.decay_epoch}"
        )
    if cfg.model.seg_mode == "classes" and cfg.optim.lambda_identity > 0:
        raise ConfigError(
            f"optim.lambda_identity: must be 0 with model.seg_mode=classes (got {cfg.optim.lambda_identity}): "
            "identity G(seg) = seg is undefined between 3-channel photos and 151-channel class maps"
        )
    if cfg.optim.lambda_paired > 0 and not cfg.data.paired:
        raise ConfigError(
            f"optim.lambda_paired={cfg.optim.lambda_paired} needs data.paired: true (aligned photo and label crops)"
        )
    if cfg.model.gumbel_noise < 0:
        raise ConfigError(f"model.gumbel_noise: must be >= 0, got {cfg.model.gumbel_noise}")
    if not cfg.model.gumbel_temperature > 0:
        raise ConfigError(f"model.gumbel_temperature: must be > 0, got {cfg.model.gumbel_temperature}")
    if not (cfg.optim.lr > 0 and 0 <= cfg.optim.beta1 < 1 and 0 <= cfg.optim.beta2 < 1):
        raise ConfigError("optim: lr must be > 0 and beta1, beta2 in [0, 1)")
    return cfg


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``['--optim.lr', '1e-4', '--train.compile', 'true']`` -> nested dict of YAML-typed values."""
    tree: dict[str, Any] = {}
    it = iter(args)
    for flag in it:
        if not flag.startswith("--") or len(flag) < 3:
            raise ConfigError(f"{flag}: expected --section.key value")
        key, eq, raw = flag[2:].partition("=")
        if not eq:
            raw = next(it, None)
            if raw is None:
                raise ConfigError(f"--{key}: missing value")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw != "" else ""
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- command-line overrides, then validated."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        try:
            _apply(cfg, data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    _apply(cfg, parse_overrides(overrides or []))
    return validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config saved with ``to_dict`` (e.g. from a checkpoint)."""
    cfg = Config()
    _apply(cfg, data)
    return validate(cfg)
