"""Shared fixtures: tiny synthetic ADE20K datasets in both on-disk layouts (read-only; copy to modify)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclegan.data.synthetic import make_synthetic_ade20k

# Varied sizes and a few grayscale photos, like real ADE20K; small enough for milliseconds per image.
SYNTHETIC = {"n_train": 10, "n_val": 3, "size": (48, 64), "size_jitter": 0.3, "grayscale_every": 4, "seed": 0}


@pytest.fixture(scope="session")
def scene_parsing_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``ADEChallengeData2016`` folder."""
    return make_synthetic_ade20k(tmp_path_factory.mktemp("scene_parsing"), layout="scene-parsing", **SYNTHETIC)


@pytest.fixture(scope="session")
def full_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ``ADE20K_2021_17_01`` folder with the same scenes, plus its ``ade150_class_map.json``."""
    return make_synthetic_ade20k(tmp_path_factory.mktemp("full"), layout="full", **SYNTHETIC)
