"""Generator and PatchGAN discriminator of CycleGAN (Zhu et al., 2017).

With the defaults the layer shapes (and so the parameter counts: 11,378,179 for the
generator, 2,764,737 for the discriminator) are those of the reference ResNet-9-block
generator and 70x70 PatchGAN of the official implementation, so its weights load here.

Categorical segmentation (``model.seg_mode: classes``) changes only the ends: a network that reads
one-hot class maps puts a 1x1 embedding (151 -> a few dozen channels) in front of its first layer,
and the photo -> seg generator ends in a 3x3 conv to 151 logits instead of the 7x7 conv and tanh.
A 7x7 conv straight from or to 151 channels would cost more than half a generator; these cost a
few percent of a step (see the README's FLOP figures).
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


def embedding(in_channels: int, embed_channels: int) -> nn.Module | None:
    """The 1x1 conv that maps a one-hot class map to ``embed_channels`` learned features (on a
    one-hot input it is a per-class vector lookup, with gradients for soft inputs); None for 0."""
    return nn.Conv2d(in_channels, embed_channels, 1) if embed_channels else None


class Generator(nn.Module):
    """ResNet generator: [embedding] -> encoder (/4) -> ``n_residual_blocks`` -> decoder (x4) -> head.

    ``head="tanh"``: a 7x7 conv and tanh, the output in [-1, 1] (photos, palette maps).
    ``head="logits"``: a 3x3 conv to ``out_channels`` unnormalised class scores.
    ``embed_channels`` > 0 puts a 1x1 embedding in front (for one-hot class-map input).
    Input sides must be multiples of 4; the output has the input's size. With the defaults the
    parameter names are the reference implementation's.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        n_residual_blocks: int = 9,
        ngf: int = 64,
        embed_channels: int = 0,
        head: str = "tanh",
    ) -> None:
        super().__init__()
        if head not in ("tanh", "logits"):
            raise ValueError(f"head must be 'tanh' or 'logits', got {head!r}")
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "n_residual_blocks": n_residual_blocks,
            "ngf": ngf,
            "embed_channels": embed_channels,
            "head": head,
        }
        self.embed = embedding(in_channels, embed_channels)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(embed_channels or in_channels, ngf, 7),
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
        if head == "tanh":
            layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7), nn.Tanh()]
        else:
            # 3x3, not 1x1: a per-pixel head has no spatial context and scored mIoU 0.20 against 0.62 (README)
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, out_channels, 3)]
        self.decoder = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"Generator input sides must be multiples of 4, got {tuple(x.shape[-2:])}")
        if self.embed is not None:
            x = self.embed(x)
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

    def __init__(self, in_channels: int = 3, ndf: int = 64, embed_channels: int = 0) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "ndf": ndf, "embed_channels": embed_channels}
        self.embed = embedding(in_channels, embed_channels)
        self.model = nn.Sequential(
            DiscriminatorBlock(embed_channels or in_channels, ndf, normalize=False),
            DiscriminatorBlock(ndf, ndf * 2),
            DiscriminatorBlock(ndf * 2, ndf * 4),
            DiscriminatorBlock(ndf * 4, ndf * 8, stride=1),
            nn.ZeroPad2d(1),
            nn.Conv2d(ndf * 8, 1, 4),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        return self.model(x)


def patch_map_size(side: int) -> int:
    """Side of the discriminator's patch map for an input side (see ``Discriminator``)."""
    return side // 2 // 2 // 2 - 2
