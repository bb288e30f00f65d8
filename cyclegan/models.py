"""Generator and PatchGAN discriminator of CycleGAN (Zhu et al., 2017).

With the defaults the layer shapes (and so the parameter counts: 11,378,179 for the
generator, 2,764,737 for the discriminator) are those of the reference ResNet-9-block
generator and 70x70 PatchGAN of the official implementation, so its weights load here.
"""

from __future__ import annotations

import torch
from torch import nn


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """N(0, 0.02) for conv weights and zero biases, as in the CycleGAN paper."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convs with instance norm and a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Generator(nn.Module):
    """ResNet generator: encoder (/4) -> ``n_residual_blocks`` -> decoder (x4) -> tanh.

    Input sides must be multiples of 4; the output has the input's size, in [-1, 1].
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        n_residual_blocks: int = 9,
        ngf: int = 64,
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "n_residual_blocks": n_residual_blocks,
            "ngf": ngf,
        }
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(inplace=True),
        ]
        channels = ngf
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1),
                nn.InstanceNorm2d(channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        self.encoder = nn.Sequential(*layers)
        self.translator = nn.Sequential(*(ResidualBlock(channels) for _ in range(n_residual_blocks)))
        layers = []
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7), nn.Tanh()]
        self.decoder = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"Generator input sides must be multiples of 4, got {tuple(x.shape[-2:])}")
        return self.decoder(self.translator(self.encoder(x)))


class DiscriminatorBlock(nn.Module):
    """4x4 conv -> optional instance norm -> LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2, normalize: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, stride=stride, padding=1)]
        if normalize:
            layers.append(nn.InstanceNorm2d(out_channels))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Discriminator(nn.Module):
    """70x70 PatchGAN: one real/fake score per overlapping 70x70 input patch.

    For an input side ``s`` the patch map side is ``floor(floor(floor(s/2)/2)/2) - 2``
    (three stride-2 blocks, then two stride-1 4x4 convs that each remove one pixel),
    e.g. 256 -> 30, 128 -> 14, 64 -> 6. Inputs need sides of at least 24.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "ndf": ndf}
        self.model = nn.Sequential(
            DiscriminatorBlock(in_channels, ndf, normalize=False),
            DiscriminatorBlock(ndf, ndf * 2),
            DiscriminatorBlock(ndf * 2, ndf * 4),
            DiscriminatorBlock(ndf * 4, ndf * 8, stride=1),
            nn.ZeroPad2d(1),
            nn.Conv2d(ndf * 8, 1, 4),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def patch_map_size(side: int) -> int:
    """Side of the discriminator's patch map for an input side (see ``Discriminator``)."""
    return side // 2 // 2 // 2 - 2
