"""Shared fixtures: tiny synthetic ADE20K datasets in both on-disk layouts, their shards and a reference
training run (read-only; copy to modify)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from train_helpers import make_shards, make_unpaired_shards, tiny_args

from cyclegan.data.synthetic import make_synthetic_ade20k

# torch.compile's CPU kernels without SIMD: inductor compiles them in about half the time (most of the
# compile tests' cost), and nothing the tests check (graphs, recompiles, losses) depends on vector code.
# Read when torch._inductor.config is first imported (not by ``import torch``); subprocesses inherit it.
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")

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


@pytest.fixture(scope="session")
def train_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 4 validation samples as shards, for the trainer's tests."""
    return make_shards(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="session")
def unpaired_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 photos and 8 maps of other names and sizes, in two streams; 3 paired validation samples."""
    return make_unpaired_shards(tmp_path_factory.mktemp("unpaired"))


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised network of the FID Inception's architecture, saved like the real file."""
    import torch
    from torchvision.models import inception_v3

    from cyclegan.evaluate import INCEPTION_FILE

    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def reference_run(train_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-epoch single-process run that resume tests must reproduce."""
    from cyclegan.train import main

    out = tmp_path_factory.mktemp("reference")
    assert main(tiny_args(train_shards, out)) == 0
    return out
