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
