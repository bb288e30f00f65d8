"""What the trainer shows people: W&B runs, the progress bar's text, and sample grids.

Only the main process creates a ``RunLogger``. With ``wandb.mode: disabled`` wandb is
never imported, so hosts without it (or without network) train the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from cyclegan.config import ConfigError, WandbConfig
from cyclegan.palette import CLASS_NAMES, class_labels, seg_to_ids
from cyclegan.seg_encoding import RgbEncoding, SegEncoding

STEP_METRIC = "trainer/step"
GRID_COLUMNS = ("photo", "G(photo)", "F(G(photo))", "seg", "F(seg)", "G(F(seg))")


@torch.no_grad()
def translate_samples(
    real2seg: torch.nn.Module,
    seg2real: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    encoding: SegEncoding | None = None,
) -> dict[str, torch.Tensor]:
    """The six views of a sample grid (``GRID_COLUMNS``), each Bx3xHxW in [-1, 1]; in classes mode
    maps are drawn as their argmax in the training palette, and F is given G's argmax."""
    encoding = encoding or RgbEncoding()
    photo, seg = batch["photo"], encoding.real(batch)
    seg_out = real2seg(photo)
    fake_photo = seg2real(seg)
    views = (photo, encoding.picture(seg_out), seg2real(encoding.hard(seg_out)), encoding.picture(seg),
             fake_photo, encoding.picture(real2seg(fake_photo)))  # fmt: skip
    return {name: view.float() for name, view in zip(GRID_COLUMNS, views, strict=True)}


def sample_grid(views: dict[str, torch.Tensor]) -> torch.Tensor:
    """One row per item, one column per view, as a 3xHxW image in [0, 1] on the CPU."""
    rows = torch.stack(list(views.values()), dim=1).flatten(0, 1)
    return make_grid((rows + 1) / 2, nrow=len(views), padding=2, pad_value=1.0).clamp(0, 1).cpu()


def save_grid(grid: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path


class RunLogger:
    """The main process's record of a run: ``metrics.jsonl`` in the output folder (always; readable
    where W&B is not installed or allowed) and the W&B run (optional; ``run_id`` lets a resumed run
    continue it)."""

    def __init__(self, cfg: WandbConfig, config: dict[str, Any], out_dir: Path, run_id: str | None) -> None:
        self.run = None
        self.log_artifacts = cfg.log_artifacts
        self.metrics_path = out_dir / "metrics.jsonl"
        if cfg.mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"wandb.mode={cfg.mode} needs wandb: pip install wandb") from None
        self.wandb = wandb
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity or None,
            name=cfg.name or None,
            mode=cfg.mode,
            dir=str(out_dir),
            config=config,
            id=run_id,
            resume="allow" if run_id else None,
        )
        # Rows carry the trainer's own step, not W&B's: W&B drops a row whose ``step=`` is at or
        # below the last one it saw, which is every row a resumed run replays after a preemption.
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC)

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    def log(self, metrics: dict[str, float], step: int) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.run is not None:
            self.run.log({**metrics, STEP_METRIC: step})

    def log_samples(self, views: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], step: int) -> None:
        """The epoch's grid plus each photo with predicted and true class masks (named). The prediction
        is read off the grid's G(photo) view: palette colours (the argmax's, in classes mode)."""
        if self.run is None:
            return
        labels = class_labels()
        predicted = seg_to_ids(views["G(photo)"]).cpu().numpy()
        grid = sample_grid(views)
        images = []
        for i, photo in enumerate(((batch["photo"].float() + 1) * 127.5).clamp(0, 255).byte().cpu()):
            masks = {
                "prediction": {"mask_data": predicted[i], "class_labels": labels},
                "ground_truth": {"mask_data": batch["label"][i].cpu().numpy(), "class_labels": labels},
            }
            images.append(self.wandb.Image(photo.permute(1, 2, 0).numpy(), masks=masks, caption=batch["key"][i]))
        grid_image = self.wandb.Image(grid.permute(1, 2, 0).numpy(), caption=" | ".join(GRID_COLUMNS))
        self.run.log({"samples/grid": grid_image, "samples/segmentation": images, STEP_METRIC: step})

    def log_exports(self, paths: list[Path], epoch: int, metadata: dict[str, Any]) -> None:
        """With ``wandb.log_artifacts``: the epoch's generator files as the next version of this run's
        model artifact, aliased ``latest`` and ``epoch-N`` (W&B moves ``latest`` to the newest)."""
        if self.run is None or not self.log_artifacts:
            return
        artifact = self.wandb.Artifact(f"generators-{self.run.id}", type="model", metadata={"epoch": epoch, **metadata})
        for path in paths:
            artifact.add_file(str(path), name=path.name)
        self.run.log_artifact(artifact, aliases=["latest", f"epoch-{epoch}"])

    def log_class_iou(self, scores: dict[str, Any], step: int) -> None:
        """An evaluation's per-class IoU and accuracy as a table with the class names (present classes only)."""
        if self.run is None:
            return
        rows = [[k, name, scores["per_class_iou"][k - 1], scores["per_class_acc"][k - 1], pixels]
                for k, (name, pixels) in enumerate(zip(CLASS_NAMES, scores["gt_pixels"], strict=True), start=1)
                if pixels]  # fmt: skip
        table = self.wandb.Table(columns=["id", "class", "iou", "accuracy", "pixels"], data=rows)
        self.run.log({"eval/per_class": table, STEP_METRIC: step})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def format_postfix(metrics: dict[str, float]) -> str:
    """Short text for the progress bar: the total losses and throughput."""
    keys = ("train/loss_G", "train/loss_D", "perf/pairs_per_s")
    return " ".join(f"{k.split('/')[-1]}={metrics[k]:.3g}" for k in keys if k in metrics)
