"""The reference CycleGAN's input path, rebuilt over this project's shards as the baseline that
the loader benchmark and row (a) of the training ladder measure against."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cyclegan.config import DataConfig
from cyclegan.data.catalog import LABEL, PHOTO, Sample, worker_context
from cyclegan.data.codecs import read_part
from cyclegan.palette import TRAIN_PALETTE


class SeedStyleDataset(Dataset):
    """PIL decode, then torchvision's PIL transforms per image (bicubic ``Resize``, ``RandomCrop``,
    ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``). As in the seed, the segmentation map is
    a colour image put through the same transforms as a photo."""

    def __init__(self, samples: list[Sample], load_size: int, crop_size: int) -> None:
        from torchvision import transforms

        self.samples = samples
        self.files: dict[Any, Any] = {}
        self.palette = TRAIN_PALETTE.numpy().tobytes()
        self.transform = transforms.Compose(
            [
                transforms.Resize(load_size, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.RandomCrop(crop_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, index: int, part: str) -> Image.Image:
        return Image.open(io.BytesIO(read_part(self.samples[index], part, self.files).numpy().tobytes()))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        photo = self._image(index, PHOTO).convert("RGB")
        seg = self._image(index, LABEL)
        seg.putpalette(self.palette)
        return {"photo": self.transform(photo), "seg": self.transform(seg.convert("RGB"))}


def seed_style_epochs(cfg: DataConfig, samples: list[Sample]) -> Callable[[int], Iterable[Any]]:
    """``epoch number -> batches``: a new DataLoader (and workers) per epoch, shuffled by index, as
    the seed's loop does. Only the start method differs: forking a process after DALI or gloo
    started their threads can deadlock. Each epoch's shuffle has its own generator."""
    dataset = SeedStyleDataset(samples, cfg.load_size, cfg.crop_size)

    def epoch(number: int) -> Iterable[Any]:
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(number),
            num_workers=cfg.num_workers,
            drop_last=True,
            multiprocessing_context=worker_context(__name__) if cfg.num_workers else None,
        )

    return epoch
