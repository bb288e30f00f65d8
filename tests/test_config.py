import pytest

from cyclegan.config import Config, ConfigError, from_dict, load_config, to_dict


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
        (["--optim.lrr", "1"], "optim.lrr: unknown key"),
        (["--train.precision", "fp8"], "train.precision: must be one of"),
        (["--data.batch_size", "0"], "data.batch_size: must be >= 1"),
        (["--data.batch_size", "two"], "data.batch_size: expected int"),
        (["--optim.decay_epoch", "300"], "optim.decay_epoch"),
        (["--data.crop_size", "30"], "data.crop_size"),
        (["--train.stop_check_every", "0"], "train.stop_check_every: must be >= 1"),
        (["--train.compile_mode", "reduce-overhead"], "train.compile_mode: must be one of default, max-autotune"),
        (["--data.load_size", "64", "--data.crop_size", "128"], "data.load_size"),
        (["--optim"], "--optim: missing value"),
        (["optim.lr", "1"], "expected --section.key value"),
        (["--optim", "3"], "optim: expected a mapping"),
        (["--model.seg_mode", "palette"], "model.seg_mode: must be one of rgb, classes"),
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


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(path)
    path.write_text("model:\n  blocks: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: model.blocks: unknown key"):
        load_config(path)


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
