"""One typed configuration tree, filled from a YAML file and dotted command-line overrides.

    cyclegan-train --config configs/ade20k.yaml --optim.lr 1e-4 --train.precision bf16

Every field has a default (the CycleGAN paper's where it has one), a YAML file sets any
subset, and ``--section.field value`` overrides on the command line win over both. The
resolved tree is validated once, printed by the trainer and saved with each checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from argparse import ArgumentError
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser, Namespace


@dataclass
class ModelConfig:
    """model: the networks' widths and how segmentation maps are represented"""

    n_residual_blocks: int = 9
    """Residual blocks in each generator's translator (paper: 9 at 256 px)."""
    ngf: int = 64
    """Filters in the generators' first layer."""
    ndf: int = 64
    """Filters in the discriminators' first layer."""
    seg_mode: Literal["rgb", "classes"] = "rgb"
    """rgb: G draws the map in the training palette (3 channels through tanh) and
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
    """data: the shards, the split, augmentation and batching"""

    shards: str = "data/shards"
    """Directory written by cyclegan-shard (holds manifest.json and the tars)."""
    train_split: str = "training"
    """Split trained on."""
    val_split: str = "validation"
    """Split the sample grids and evaluation use."""
    loader: Literal["auto", "dali", "torch"] = "auto"
    """Which loader decodes: auto takes DALI when it imports and runs here, else the torchvision one."""
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
    epoch_length: Literal["max", "min"] = "max"
    """Unpaired shards (two domains of different sizes): max, an epoch reads the larger domain once and
    cycles the smaller through fresh permutations; min, it reads the smaller once and a part of the
    larger, a different part each epoch. Paired shards: no effect."""


@dataclass
class OptimConfig:
    """optim: Adam, the learning-rate schedule and the loss weights"""

    lr: float = 2e-4
    """Adam learning rate of generators and discriminators at the reference batch (see lr_scaling)."""
    lr_scaling: Literal["none", "sqrt", "linear"] = "none"
    """At a global batch B (data.batch_size x processes), sqrt trains with lr * (B / lr_reference_batch)
    ** 0.5 (the square-root rule for Adam), linear with the ratio itself, none with lr as given."""
    lr_reference_batch: int = 1
    """The global batch at which optim.lr is meant (the paper's: 1)."""
    beta1: float = 0.5
    """Adam beta1 (paper: 0.5, after DCGAN (Radford et al. 2015), which found 0.9 unstable)."""
    beta2: float = 0.999
    """Adam beta2."""
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
    """train: outputs, precision, compilation, checkpoints, logging and evaluation"""

    out_dir: str = "runs/ade20k"
    """Where generator/discriminator files, sample grids and checkpoints go."""
    precision: Literal["no", "bf16", "fp16"] = "no"
    """Autocast precision (fp16 uses loss scaling)."""
    compile: bool = False
    """torch.compile the four networks."""
    compile_mode: Literal["default", "max-autotune"] = "default"
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
    eval_segmenter: str = ""
    """An ADE20K-150 segmentation model for transformers (hub id or save_pretrained folder; pip install -e
    '.[eval]'); when set, evaluations also report how well it segments F's photos of the validation maps,
    as cyclegan-eval --protocol ade20k does at 256x256 (eval/seg2real_seg_miou, ..._pixel_acc, ..._class_acc)."""
    num_samples: int = 4
    """Validation items drawn in each epoch's sample grid."""
    max_steps: int = 0
    """Stop after this many steps in total (0: run all epochs); for smoke tests and benchmarks."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of both generators, updated every step with the warm-up
    min(decay, (1 + t) / (10 + t)); sample grids, evaluations and exports use it. 0 turns it off."""
    export_ema: bool = True
    """With ema_decay > 0: the per-epoch generator exports hold the averaged weights (false: the trained
    ones). Discriminators are always exported as trained; the training state keeps both."""


@dataclass
class WandbConfig:
    """wandb: Weights & Biases tracking"""

    mode: Literal["online", "offline", "disabled"] = "disabled"
    """W&B mode (disabled never imports wandb)."""
    project: str = "cyclegan-ade20k"
    """W&B project the run is logged to."""
    entity: str = ""
    """W&B team or user; empty: your default entity."""
    name: str = ""
    """Run name; empty lets W&B choose."""
    log_artifacts: bool = False
    """Log each epoch's two generator exports as a version of the model artifact generators-<run id>,
    with aliases latest and epoch-N (uploads 2 x 45 MB an epoch at ngf 64)."""


@dataclass
class Config:
    """the run"""

    seed: int = 0
    """Seeds weights, data order, augmentation and replay buffers."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (file/key and what is wrong)."""


def validate(cfg: Config) -> Config:
    """Reject settings that cannot work, before any process group or file is touched."""
    at_least = {
        1: ("model.n_residual_blocks", "model.ngf", "model.ndf", "model.seg_embed", "data.batch_size",
            "data.crop_size", "optim.epochs", "optim.lr_reference_batch", "train.keep_checkpoints",
            "train.max_nonfinite_steps", "train.log_every", "train.stop_check_every", "train.export_every",
            "train.dist_timeout_s"),
        0: ("data.num_workers", "data.sample_size", "optim.replay_size", "optim.lambda_identity",
            "optim.lambda_cycle", "optim.lambda_cycle_seg", "optim.lambda_paired", "train.checkpoint_every_steps",
            "train.eval_every", "train.num_samples", "train.max_steps", "train.keep_exports"),
    }  # fmt: skip
    for minimum, keys in at_least.items():
        for key in keys:
            section, name = key.split(".")
            if (value := getattr(getattr(cfg, section), name)) < minimum:
                raise ConfigError(f"{key}: must be >= {minimum}, got {value}")
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
    if cfg.train.eval_segmenter and not cfg.train.eval_every:
        raise ConfigError(f"train.eval_segmenter ({cfg.train.eval_segmenter}) scores evaluations: set train.eval_every")
    if cfg.model.gumbel_noise < 0:
        raise ConfigError(f"model.gumbel_noise: must be >= 0, got {cfg.model.gumbel_noise}")
    if not cfg.model.gumbel_temperature > 0:
        raise ConfigError(f"model.gumbel_temperature: must be > 0, got {cfg.model.gumbel_temperature}")
    if not 0 <= cfg.train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay: must be in [0, 1) (0: off), got {cfg.train.ema_decay}")
    if not (cfg.optim.lr > 0 and 0 <= cfg.optim.beta1 < 1 and 0 <= cfg.optim.beta2 < 1):
        raise ConfigError("optim: lr must be > 0 and beta1, beta2 in [0, 1)")
    return cfg




def shipped_config(name: str) -> Path:
    """``configs/<name>.yaml`` from a source checkout, or from the copy a wheel installs."""
    for base in (Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / "cyclegan-ade20k"):
        path = base / "configs" / f"{name}.yaml"
        if path.is_file():
            return path
    raise FileNotFoundError(f"configs/{name}.yaml not found next to the package or under sys.prefix/share")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --- filling the tree: jsonargparse reads the dataclasses above, their types and docstrings ------


def build_parser(prog: str = "cyclegan-train", description: str | None = None) -> ArgumentParser:
    """``--config FILE`` plus one ``--section.field`` flag per field, help text from the docstrings.

    jsonargparse only reads attribute docstrings with its process-wide setting switched on; it
    changes nothing but help text. Its own ``--print_config`` is off (it prints before validating):
    callers that want one print ``to_dict`` of the validated tree. Errors raise instead of exiting,
    and ``parse_config`` turns them into one line.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    usage = f"{prog} [--config FILE ...] [--section.field VALUE ...] [--help]"
    parser = ArgumentParser(prog=prog, usage=usage, description=description, exit_on_error=False, print_config=None)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file setting any subset of the fields below "
                        "(flags after it win); cyclegan-train --print_config writes one")  # fmt: skip
    parser.add_class_arguments(Config, None)
    return parser


def parse_config(parser: ArgumentParser, argv: list[str]) -> tuple[Namespace, Config]:
    """Defaults <- ``--config`` files <- flags, type-checked by the parser, then ``validate``d.

    Returns the parser's namespace too, for any flags the caller added beside the config's.
    Raises ``ConfigError`` with one line naming the key (or the file) and what is wrong.
    """
    if problem := _bad_config_file(parser, argv):  # each file on its own, so the error can name it
        raise ConfigError(problem)
    try:
        namespace = parser.parse_args(argv)
        _check_sections(namespace)
    except (ArgumentError, ConfigError) as e:
        raise ConfigError(_one_line(str(e))) from None
    return namespace, _build(parser, namespace)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """``parse_config`` of ``--config path`` (when given) and ``overrides`` (``["--optim.lr", "1e-4"]``)."""
    argv = (["--config", str(path)] if path is not None else []) + list(overrides or [])
    return parse_config(build_parser(), argv)[1]


def from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a config saved with ``to_dict`` (a checkpoint's, ``out_dir/config.yaml``), type-checked
    and validated like the command line; fields missing from an older save take their defaults."""
    parser = build_parser()
    try:
        namespace = parser.parse_object(data)
        _check_sections(namespace)
    except (ArgumentError, ConfigError) as e:
        raise ConfigError(_one_line(str(e))) from None
    except TypeError:
        raise ConfigError(f"expected a mapping of sections, got {type(data).__name__}") from None
    return _build(parser, namespace)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name != "seed")


def _check_sections(namespace: Namespace) -> None:
    for name in SECTIONS:  # a YAML "data: 3" is read as the name of a file of data's fields
        if not isinstance(namespace.get(name), type(namespace)):
            raise ConfigError(f"{name}: expected a mapping of fields, got {namespace.get(name)!r}")


def _build(parser: ArgumentParser, namespace: Namespace) -> Config:
    built = parser.instantiate(namespace)
    return validate(Config(seed=built.seed, **{name: built[name] for name in SECTIONS}))


def _bad_config_file(parser: ArgumentParser, argv: list[str]) -> str | None:
    """The first ``--config`` file that does not parse on its own, as ``FILE: what is wrong``. Checked
    before the whole command line, as a later flag may otherwise hide it (``data: 3``, then ``--data.x``)."""
    files = [argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag == "--config"]
    files += [flag.split("=", 1)[1] for flag in argv if flag.startswith("--config=")]
    for name in files:
        path = Path(name)
        if not path.is_file():
            return f"{path}: cannot read config (no such file)"
        try:
            _check_sections(parser.parse_args(["--config", name]))
        except (ArgumentError, ConfigError) as e:
            return f"{path}: {_one_line(str(e))}"
    return None


_UNKNOWN = [
    re.compile(r"unrecognized arguments: (?P<key>\S+)"),
    re.compile(r"Group '(?P<group>[^']+)' does not accept option '(?P<key>[^']+)'"),
    re.compile(r"Option '(?P<key>[^']+)' is not accepted"),
    re.compile(r"Key '(?P<key>[^']+)' is not expected"),
]
_WRONG_TYPE = re.compile(r'Parser key "(?P<key>[^"]+)":\s*Expected a (?P<kind>.+?)\. Got value: (?P<value>.*)')


def _one_line(message: str) -> str:
    """jsonargparse's (often multi-line) error as ``key: what is wrong``, with a suggestion for typos."""
    if match := _WRONG_TYPE.search(message):
        kind = match["kind"]
        if literal := re.fullmatch(r"typing\.Literal\[(.*)\]", kind):
            kind = "one of " + literal[1].replace("'", "")
        else:
            kind = re.sub(r"<class '(\w+)'>", r"\1", kind)
        return f"{match['key']}: expected {kind}, got {match['value'].strip()!r}"
    for pattern in _UNKNOWN:
        if match := pattern.search(message):
            key = match["key"].split("=", 1)[0]
            if "group" in match.groupdict():
                key = f"{match['group']}.{key}"
            if not key.startswith("--") and pattern is _UNKNOWN[0]:
                return f"unexpected argument {key!r}: fields are set as --section.field value"
            key = key.removeprefix("--")
            close = difflib.get_close_matches(key, list(flatten(to_dict(Config()))), n=1, cutoff=0.6)
            return f"{key}: unknown key" + (f"; did you mean {close[0]}?" if close else "")
    if match := re.search(r'Parser key "(?P<key>[^"]+)":\s*Unable to load config \'(?P<value>[^\']*)\'', message):
        return f"{match['key']}: expected a mapping of fields (or a YAML file of them), got {match['value']!r}"
    if message.startswith("Unexpected config"):
        return "the top level must be a mapping of sections (model, data, optim, ...)"
    if "Problems parsing config" in message:
        return "invalid YAML (" + message.split(":", 1)[1].strip().splitlines()[0] + ")"
    if match := re.match(r"argument (\S+): expected one argument", message):
        return f"{match[1]}: missing value"
    return " ".join(message.split())
