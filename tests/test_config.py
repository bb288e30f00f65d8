from pathlib import Path

import pytest
import yaml

from cyclegan.config import Config, ConfigError, flatten, from_dict, load_config, to_dict
from cyclegan.train import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_defaults_follow_the_paper():
    cfg = Config()
    assert (cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2) == (2e-4, 0.5, 0.999)
    assert (cfg.optim.epochs, cfg.optim.decay_epoch) == (200, 100)
    # The paper's labels<->photo setting: no identity loss (its photo<->painting runs use 0.5).
    assert (cfg.optim.lambda_cycle, cfg.optim.lambda_identity, cfg.optim.replay_size) == (10.0, 0.0, 50)
    assert (cfg.model.n_residual_blocks, cfg.data.load_size, cfg.data.crop_size) == (9, 286, 256)


def test_yaml_then_cli_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1.0e-3\n  epochs: 10\n  decay_epoch: 5\ndata:\n  batch_size: 4\n")
    cfg = load_config(path, ["--optim.lr", "5e-4", "--train.compile=true", "--wandb.mode", "offline"])
    assert cfg.optim.lr == 5e-4 and cfg.optim.epochs == 10 and cfg.data.batch_size == 4
    assert cfg.train.compile is True and cfg.wandb.mode == "offline"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--optim.lrr", "1"], "optim.lrr: unknown key; did you mean optim.lr"),
        (["--batch_size", "8"], "batch_size: unknown key; did you mean data.batch_size"),
        (["--train.precision", "fp8"], "train.precision: expected one of no, bf16, fp16, got 'fp8'"),
        (["--data.batch_size", "0"], "data.batch_size: must be >= 1"),
        (["--data.batch_size", "two"], "data.batch_size: expected int, got 'two'"),
        (["--data.paired", "maybe"], "data.paired: expected bool"),
        (["--optim.lr", "fast"], "optim.lr: expected float"),
        (["--optim.decay_epoch", "300"], "optim.decay_epoch"),
        (["--data.crop_size", "30"], "data.crop_size"),
        (["--train.stop_check_every", "0"], "train.stop_check_every: must be >= 1"),
        (["--train.compile_mode", "reduce-overhead"], "train.compile_mode: expected one of default, max-autotune"),
        (["--data.load_size", "64", "--data.crop_size", "128"], "data.load_size"),
        (["--optim"], "--optim: missing value"),
        (["optim.lr", "1"], "unexpected argument 'optim.lr': fields are set as --section.field value"),
        (["--optim", "3"], "optim: expected a mapping"),
        (["--model.seg_mode", "palette"], "model.seg_mode: expected one of rgb, classes"),
        (["--model.seg_mode", "classes", "--optim.lambda_identity", "0.5"],
         "optim.lambda_identity: must be 0 with model.seg_mode=classes"),
        (["--optim.lambda_paired", "1"], "optim.lambda_paired=1.0 needs data.paired: true"),
        (["--model.seg_mode", "classes", "--model.seg_embed", "0"], "model.seg_embed: must be >= 1"),
        (["--model.gumbel_temperature", "0"], "model.gumbel_temperature: must be > 0"),
    ],
)
def test_bad_settings_name_the_key(args, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, args)


@pytest.mark.parametrize(
    "text,message",
    [
        ("optim: [1, 2\n", "bad.yaml: invalid YAML"),
        ("model:\n  blocks: 3\n", "bad.yaml: model.blocks: unknown key; did you mean model.n_residual_blocks"),
        ("dat:\n  batch_size: 3\n", "bad.yaml: dat.batch_size: unknown key; did you mean data.batch_size"),
        ("data:\n  batch_size: abc\n", "bad.yaml: data.batch_size: expected int, got 'abc'"),
        ("data: 3\n", "bad.yaml: data: expected a mapping of fields, got 3"),
        ("- 1\n", "bad.yaml: the top level must be a mapping of sections"),
    ],
)
def test_bad_yaml_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, ["--data.batch_size", "2"])
    with pytest.raises(ConfigError, match=f"{tmp_path / 'missing.yaml'}: cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_help_documents_every_field(capsys):
    """Each field's flag, with its type and default, under its section's heading."""
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())  # undo the help formatter's line wrapping
    for key in flatten(to_dict(Config())):
        assert f"--{key} " in text, key
    for section, flag in [("model", "--model.ngf NGF Filters in the generators' first layer. (type: int, default: 64)"),
                          ("data", "--data.batch_size BATCH_SIZE Pairs per process and step (paper: 1). (type: int, "
                                   "default: 1)"),
                          ("optim", "--optim.lr LR Adam learning rate"),
                          ("train", "--train.precision {no,bf16,fp16} Autocast precision"),
                          ("wandb", "{online,offline,disabled} W&B mode")]:  # fmt: skip
        assert f"\n{section}: " in out, section
        assert flag in text, flag
    assert "(type: float, default: 0.0002)" in text


def test_print_config_round_trip(tmp_path, capsys):
    """What --print_config prints, given back as --config, resolves to the same tree."""
    args = ["--config", "configs/demo.yaml", "--data.batch_size", "8", "--optim.lr", "1e-4", "--wandb.name", "x y"]
    assert main([*args, "--print_config"]) == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    assert load_config(tmp_path / "printed.yaml") == load_config(None, args)
    assert yaml.safe_load(printed) == to_dict(load_config(None, args))


@pytest.mark.parametrize(
    "args,line",
    [
        (["--data.batchsize", "8"],
         "cyclegan-train: error: data.batchsize: unknown key; did you mean data.batch_size?"),
        (["--data.batch_size", "eight"], "cyclegan-train: error: data.batch_size: expected int, got 'eight'"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(args, line, capsys):
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_configs_written_before_the_cli_change_still_load():
    """out_dir/config.yaml (and a checkpoint's config, the same dict) as the hand-written parser saved them."""
    path = FIXTURES / "run_config_81c3638.yaml"
    cfg = load_config(path)
    assert (cfg.model.seg_mode, cfg.data.batch_size, cfg.optim.lr) == ("classes", 4, 1e-4)
    assert from_dict(yaml.safe_load(path.read_text())) == cfg


def test_dict_round_trip():
    cfg = load_config(None, ["--model.ngf", "16", "--wandb.name", "x"])
    assert from_dict(to_dict(cfg)) == cfg


def test_shipped_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    for path in configs:
        load_config(path)


@pytest.mark.parametrize(("rule", "lr"), [("none", 2e-4), ("sqrt", 8e-4), ("linear", 3.2e-3)])
def test_lr_scaling_rules(rule, lr):
    """Batch 8 on 2 processes is a global batch of 16 = 16x the reference batch 1."""
    from cyclegan.build import scaled_lr

    cfg = load_config(None, ["--data.batch_size", "8", "--optim.lr_scaling", rule])
    assert scaled_lr(cfg, world_size=2) == pytest.approx(lr)
    cfg.optim.lr_reference_batch = 16
    assert scaled_lr(cfg, world_size=2) == pytest.approx(2e-4)


@pytest.mark.slow
def test_only_parsing_needs_jsonargparse():
    """Exports, generate, eval and the step benchmark build and check configs without it (the GPU
    host of launch/gpu_check.sh may lack it); only reading a command line or a saved config needs it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['jsonargparse'] = None\n"
            "import cyclegan.generate, cyclegan.evaluate, cyclegan.bench.train\n"
            "from cyclegan.config import Config, validate; validate(Config())")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
