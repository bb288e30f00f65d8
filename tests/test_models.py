import pytest
import torch

from cyclegan.models import Discriminator, Generator, ResidualBlock, patch_map_size


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_parameter_counts_match_reference():
    # Reference ResNet-9-block generator and 70x70 PatchGAN (official CycleGAN code).
    assert n_params(Generator()) == 11_378_179
    assert n_params(Discriminator()) == 2_764_737


@pytest.mark.parametrize("shape", [(2, 32, 32), (1, 48, 80), (1, 64, 36)])
def test_generator_keeps_input_size(shape):
    b, h, w = shape
    gen = Generator(n_residual_blocks=1, ngf=8)
    out = gen(torch.randn(b, 3, h, w))
    assert out.shape == (b, 3, h, w)
    assert out.abs().max() <= 1.0


def test_generator_other_channel_counts():
    gen = Generator(in_channels=1, out_channels=3, n_residual_blocks=1, ngf=8)
    assert gen(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_generator_rejects_sides_not_multiple_of_4():
    with pytest.raises(ValueError, match="multiples of 4"):
        Generator(n_residual_blocks=1, ngf=8)(torch.randn(1, 3, 30, 32))


@pytest.mark.parametrize("h,w", [(256, 256), (64, 64), (64, 96), (100, 52)])
def test_patch_map_size(h, w):
    disc = Discriminator(ndf=8)
    out = disc(torch.randn(1, 3, h, w))
    assert out.shape == (1, 1, patch_map_size(h), patch_map_size(w))
    if h == 256:
        assert out.shape[-1] == 30  # 70x70 receptive field, 30x30 map at 256 px


def test_gradients_reach_every_parameter():
    gen = Generator(n_residual_blocks=2, ngf=8)
    disc = Discriminator(ndf=8)
    disc(gen(torch.randn(2, 3, 32, 32))).mean().backward()
    for model in (gen, disc):
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_weight_init_is_normal_002():
    gen = Generator()
    weights = torch.cat([m.weight.flatten() for m in gen.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(weights.mean().item()) < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)


def test_residual_block_is_identity_plus_residual():
    block = ResidualBlock(4)
    for p in block.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(block(x), x)


def test_classes_mode_shapes_and_parameter_counts():
    """G: a 3x3 conv to 151 logits in place of the 7x7 conv to 3 (64*151*9 + 151 vs 64*3*49 + 3 weights);
    F and D_seg: a 151 -> 32 embedding (151*32 + 32) in front of a stem that now reads 32 channels."""
    g = Generator(3, 151, head="logits")
    f = Generator(151, 3, embed_channels=32)
    d = Discriminator(151, embed_channels=32)
    assert n_params(g) == 11_378_179 - (64 * 3 * 49 + 3) + (64 * 151 * 9 + 151) == 11_455_895
    assert n_params(f) == 11_378_179 + (151 * 32 + 32) + (32 - 3) * 64 * 49 == 11_473_987
    assert n_params(d) == 2_764_737 + (151 * 32 + 32) + (32 - 3) * 64 * 16 == 2_799_297
    tiny = {"n_residual_blocks": 1, "ngf": 8}
    logits = Generator(3, 151, head="logits", **tiny)(torch.randn(2, 3, 32, 48))
    assert logits.shape == (2, 151, 32, 48) and logits.abs().max() > 0  # unbounded scores, no tanh
    one_hot = torch.zeros(2, 151, 32, 48).scatter_(1, torch.randint(0, 151, (2, 1, 32, 48)), 1.0)
    assert Generator(151, 3, embed_channels=16, **tiny)(one_hot).shape == (2, 3, 32, 48)
    assert Discriminator(151, ndf=8, embed_channels=16)(one_hot).shape == (2, 1, 2, 4)


def test_rgb_networks_keep_the_reference_parameter_names():
    """The official weights load: no embedding, the same keys as before classes mode existed."""
    names = [n for n, _ in Generator().named_parameters()]
    assert names[0] == "encoder.1.weight" and names[-1] == "decoder.7.bias" and not any("embed" in n for n in names)
    assert [n for n, _ in Discriminator().named_parameters()][0] == "model.0.block.0.weight"


def test_classes_mode_costs_at_most_10_percent_more_flops_than_rgb_at_lambda_id_0():
    """Counted by the benchmark's FLOP counter on the meta device, at the paper's 256 px and widths."""
    import argparse

    from cyclegan.bench.train import StepSetup, config_for, count_flops

    args = argparse.Namespace(blocks=9, ngf=64, ndf=64, size=256, workers=0)
    flops = {}
    for mode in ("rgb", "classes"):
        setup = StepSetup("x", "", 1, "fp32", False, "synthetic", True, True, 0.0, seg_mode=mode)
        flops[mode] = count_flops(config_for(args, setup, None))
    assert flops["rgb"] == 1_287_065_174_016  # 1.287 TFLOP a pair, the figure in the README
    assert 1.0 < flops["classes"] / flops["rgb"] <= 1.10


def test_initial_weights_depend_on_the_seed_alone():
    """Every process builds the same networks from cfg.seed, and building them draws nothing from
    the caller's random stream."""
    from cyclegan.build import build_models
    from cyclegan.config import load_config

    cfg = load_config(None, ["--model.n_residual_blocks", "1", "--model.ngf", "4", "--model.ndf", "4"])
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = build_models(cfg).real2seg.state_dict()
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(7)
    again = build_models(cfg).real2seg.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    cfg.seed = 1
    other = build_models(cfg).real2seg.state_dict()
    assert not torch.equal(first["encoder.1.weight"], other["encoder.1.weight"])
