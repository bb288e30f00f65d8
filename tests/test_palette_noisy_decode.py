"""The training palette decodes noisy generated colours back to their classes; the display one cannot."""

from __future__ import annotations

import torch

from cyclegan.palette import DISPLAY_PALETTE, NUM_CLASSES, TRAIN_PALETTE, ids_to_rgb, rgb_to_ids


def noisy_colours(palette: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every class id 64 times, coloured by ``palette`` plus ``noise`` (clamped to 0..255)."""
    ids = torch.arange(NUM_CLASSES + 1).repeat_interleave(64).reshape(1, -1)
    return ids, (ids_to_rgb(ids, palette).float() + noise.reshape(3, 1, -1)).clamp(0, 255)


def test_uniform_noise_below_half_the_grid_step_decodes_exactly() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = (torch.rand(3, (NUM_CLASSES + 1) * 64, generator=generator) * 2 - 1) * 25.0
    ids, colours = noisy_colours(TRAIN_PALETTE, noise)
    assert torch.equal(rgb_to_ids(colours), ids)


def test_gaussian_noise_decodes_nearly_always() -> None:
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(3, (NUM_CLASSES + 1) * 64, generator=generator) * 8.0
    ids, colours = noisy_colours(TRAIN_PALETTE, noise)
    assert (rgb_to_ids(colours) == ids).float().mean() > 0.99


def test_display_palette_is_ambiguous_under_the_same_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = (torch.rand(3, (NUM_CLASSES + 1) * 64, generator=generator) * 2 - 1) * 25.0
    ids, colours = noisy_colours(DISPLAY_PALETTE, noise)
    assert (rgb_to_ids(colours, DISPLAY_PALETTE) == ids).float().mean() < 0.95
