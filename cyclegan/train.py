"""Train the photo <-> segmentation CycleGAN on ADE20K shards.

Single process (CPU or one GPU):
    cyclegan-train --config configs/ade20k.yaml --data.shards data/shards
Several GPUs on one machine (same code path, Accelerate starts one process per GPU):
    accelerate launch --config_file configs/accelerate/8gpu_bf16.yaml -m cyclegan.train --config configs/ade20k.yaml
Several machines: launch/slurm.sbatch (one ``accelerate launch`` per node).
Resume after a stop or preemption (same epoch, step, LR, data position):
    cyclegan-train --config configs/ade20k.yaml --resume auto
Print the resolved configuration and the plan without training:
    cyclegan-train --config configs/ade20k.yaml --dry-run

Every epoch the main process writes ``real2seg_gen_{epoch}.pt``, ``seg2real_gen_{epoch}.pt``,
``real_disc_{epoch}.pt``, ``seg_disc_{epoch}.pt`` and ``samples/epoch_{epoch}.png`` into
``train.out_dir``, and the full training state into ``train.out_dir/checkpoints``.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from cyclegan import checkpoint
from cyclegan.build import build_models, build_optimizers, build_step, prepare_models
from cyclegan.config import Config, ConfigError, load_config, to_dict
from cyclegan.data import LoaderError, build_loader
from cyclegan.evaluate import accumulate_confusion, evaluate_fid, load_fid, segmentation_scores, tracker_metrics
from cyclegan.logging import RunLogger, format_postfix, sample_grid, save_grid, translate_samples
from cyclegan.scheduler import ReplayBuffer, linear_decay
from cyclegan.step import StepStats


class TrainingError(RuntimeError):
    """A run that cannot continue, phrased for the user."""


class StopSignal:
    """Turns SIGTERM/SIGUSR1 (cluster preemption) into a flag checked between steps."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def _rng_state() -> dict[str, Any]:
    # Only torch draws random numbers in training (the loaders and replay buffers seed their own).
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _gather_to_main(obj: Any, accelerator: Any) -> list[Any] | None:
    """Each process's object, collected on the main process only (None elsewhere)."""
    if accelerator.num_processes == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * accelerator.num_processes if accelerator.is_main_process else None
    dist.gather_object(obj, out, dst=0)
    return out


def resolve_resume(resume: str, out_dir: Path) -> Path | None:
    if not resume:
        return None
    if resume == "auto":
        states = checkpoint.list_states(out_dir / "checkpoints")
        return states[-1] if states else None
    path = Path(resume)
    if not path.is_file():
        raise TrainingError(f"{path}: resume checkpoint not found")
    return path


class Trainer:
    """Owns the run's objects; ``fit`` runs the epochs. Built on every process."""

    def __init__(self, cfg: Config, accelerator: Any) -> None:
        self.cfg = cfg
        self.acc = accelerator
        self.out_dir = Path(cfg.train.out_dir)
        self.stop_signal = StopSignal()
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.wandb_run_id: str | None = None
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        self.raw = build_models(cfg, accelerator.device)
        self.opt_g, self.opt_d = build_optimizers(self.raw, cfg, world_size=accelerator.num_processes)
        # Plain schedulers, not prepared: Accelerate would step them once per process.
        rule = linear_decay(cfg.optim.epochs, cfg.optim.decay_epoch)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, rule)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, rule)
        # Each process keeps its own buffers, with its own random stream.
        base = cfg.seed * 100_003 + 2 * accelerator.process_index
        self.buffers = (ReplayBuffer(cfg.optim.replay_size, base), ReplayBuffer(cfg.optim.replay_size, base + 1))
        self._scaler_state: dict[str, Any] | None = None

        resume_path = resolve_resume(cfg.train.resume, self.out_dir)
        if resume_path is not None:
            self._load(resume_path)

        self.models = prepare_models(accelerator, self.raw, cfg)
        if self._scaler_state is not None and getattr(accelerator, "scaler", None) is not None:
            accelerator.scaler.load_state_dict(self._scaler_state)  # fp16 loss scale continues
        self.step = build_step(accelerator, self.models, (self.opt_g, self.opt_d), self.buffers, cfg)
        self.loader = build_loader(
            cfg.data,
            split=cfg.data.train_split,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            device=accelerator.device,
            seed=cfg.seed,
            train=True,
            verbose=accelerator.is_main_process,
        )
        if self.loader.batches_per_epoch < 1:
            raise TrainingError(
                f"{cfg.data.shards}: split '{cfg.data.train_split}' is too small for "
                f"{accelerator.num_processes} process(es) x batch {cfg.data.batch_size}"
            )
        self.val_loader = None
        self.fid = None
        if cfg.train.eval_every:
            # Each process scores its own part of the validation split (centre crops).
            self.val_loader = build_loader(
                cfg.data,
                split=cfg.data.val_split,
                rank=accelerator.process_index,
                world_size=accelerator.num_processes,
                device=accelerator.device,
                seed=cfg.seed,
                train=False,
            )
            if cfg.train.inception_weights:
                self.fid = load_fid(cfg.train.inception_weights, accelerator.device)
        self.logger: RunLogger | None = None
        self.samples: dict[str, Any] | None = None
        if accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            self.samples = self._fixed_samples()
            self.logger = RunLogger(cfg.wandb, to_dict(cfg), self.out_dir, self.wandb_run_id)
            self.wandb_run_id = self.logger.run_id

    # ----------------------------------------------------------------- state
    def _load(self, path: Path) -> None:
        state = checkpoint.load_state(path)
        if state["world_size"] != self.acc.num_processes and state["step_in_epoch"] > 0:
            raise TrainingError(
                f"{path}: saved mid-epoch by {state['world_size']} processes; resume it with the same number "
                f"(now {self.acc.num_processes}) or from an epoch-end checkpoint"
            )
        for name, module in vars(self.raw).items():
            module.load_state_dict(state["models"][name])
        for opt, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
            opt.load_state_dict(state[key])
            for group in opt.param_groups:  # a saved group's "fused" would replace this run's choice
                group["fused"] = opt.defaults["fused"]
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self._scaler_state = state.get("scaler")
        per_rank = state["ranks"]
        mine = per_rank[self.acc.process_index] if self.acc.process_index < len(per_rank) else None
        if mine is not None:
            self.buffers[0].load_state_dict(mine["photo_buffer"])
            self.buffers[1].load_state_dict(mine["seg_buffer"])
            _set_rng_state(mine["rng"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.wandb_run_id = state.get("wandb_run_id")
        if self.acc.is_main_process:
            print(f"resumed from {path}: epoch {self.epoch + 1}, step {self.step_in_epoch} of that epoch", flush=True)

    def save_state(self) -> None:
        """Collective: every process contributes its buffers and RNG; the main one writes."""
        mine = {
            "photo_buffer": self.buffers[0].state_dict(),
            "seg_buffer": self.buffers[1].state_dict(),
            "rng": _rng_state(),
        }
        ranks = _gather_to_main(mine, self.acc)
        if not self.acc.is_main_process:
            return
        scaler = getattr(self.acc, "scaler", None)
        state = {
            "models": {name: m.state_dict() for name, m in vars(self.raw).items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ranks": ranks,
            "world_size": self.acc.num_processes,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "wandb_run_id": self.wandb_run_id,
            "config": to_dict(self.cfg),
        }
        checkpoint.save_state(state, self.out_dir / "checkpoints", self.global_step, self.cfg.train.keep_checkpoints)

    # ------------------------------------------------------------ per epoch
    def _fixed_samples(self) -> dict[str, Any] | None:
        """The first validation items, drawn in every epoch's grid."""
        if self.cfg.train.num_samples == 0:
            return None
        data = dataclasses.replace(self.cfg.data, batch_size=self.cfg.train.num_samples, sample_size=0)
        loader = build_loader(
            data, split=self.cfg.data.val_split, rank=0, world_size=1, device=self.acc.device, seed=0, train=False
        )
        if loader.batches_per_epoch < 1:
            raise TrainingError(
                f"{self.cfg.data.shards}: split '{self.cfg.data.val_split}' has fewer than "
                f"train.num_samples={self.cfg.train.num_samples} items"
            )
        return next(iter(loader.epoch(0)))

    def end_of_epoch(self, epoch: int) -> None:
        """Exports, sample grid and W&B images (main process); then the collective save."""
        number = epoch + 1
        if self.acc.is_main_process:
            for role, module, suffix in (
                ("real2seg", self.raw.real2seg, "gen"),
                ("seg2real", self.raw.seg2real, "gen"),
                ("real", self.raw.disc_real, "disc"),
                ("seg", self.raw.disc_seg, "disc"),
            ):
                checkpoint.export_network(module, role, self.out_dir / f"{role}_{suffix}_{number}.pt", epoch=number)
            if self.samples is not None:
                self.raw.real2seg.eval()
                self.raw.seg2real.eval()
                views = translate_samples(self.raw.real2seg, self.raw.seg2real, self.samples)
                self.raw.real2seg.train()
                self.raw.seg2real.train()
                save_grid(sample_grid(views), self.out_dir / "samples" / f"epoch_{number}.png")
                self.logger.log_samples(views, self.samples, step=self.global_step)
        if self.val_loader is not None and number % self.cfg.train.eval_every == 0:
            self.evaluate(number)
        self.save_state()

    def evaluate(self, number: int) -> dict[str, float]:
        """Validation scores of the current generators (collective: every process calls it)."""
        confusion = accumulate_confusion(self.raw.real2seg, self.val_loader.epoch(0), self.acc.device)
        if self.acc.num_processes > 1:
            confusion = self.acc.reduce(confusion, reduction="sum")
        metrics = tracker_metrics(segmentation_scores(confusion))
        if self.fid is not None:
            metrics["eval/fid"] = evaluate_fid(self.raw.seg2real, self.val_loader.epoch(0), self.acc.device, self.fid)
        if self.acc.is_main_process:
            summary = ", ".join(
                f"{k[5:]}={metrics[k]:.4g}" for k in ("eval/pixel_acc", "eval/mean_iou", "eval/fid") if k in metrics
            )
            tqdm.write(f"epoch {number} validation: {summary}")
            self.logger.log(metrics, step=self.global_step)
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self) -> str:
        """Run until the last epoch, ``train.max_steps`` or a stop signal; say which.

        Between two log or check steps nothing here reads a device value: losses, skip counts and
        the run of non-finite steps accumulate on the device (``StepStats``)."""
        cfg, acc = self.cfg, self.acc
        per_epoch = self.loader.batches_per_epoch
        if acc.is_main_process:
            print(
                f"training {cfg.optim.epochs} epochs x {per_epoch} steps on {acc.num_processes} process(es), "
                f"batch {cfg.data.batch_size} per process, lr {self.opt_g.defaults['lr']:.3g}, "
                f"{cfg.train.precision} precision, device {acc.device}",
                flush=True,
            )
        stats = StepStats(acc.device)
        while self.epoch < cfg.optim.epochs:
            stats.reset_interval()
            data_time, t_log = 0.0, time.perf_counter()
            with tqdm(
                total=per_epoch,
                initial=self.step_in_epoch,
                desc=f"epoch {self.epoch + 1}/{cfg.optim.epochs}",
                disable=not acc.is_main_process,
                dynamic_ncols=True,
            ) as bar:  # closed on errors too, so a one-line error starts on a fresh line
                batches = iter(self.loader.epoch(self.epoch, skip_batches=self.step_in_epoch))
                while True:
                    t0 = time.perf_counter()
                    batch = next(batches, None)
                    data_time += time.perf_counter() - t0
                    if batch is None:
                        break
                    stats.add(self.step(batch))
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.update(1)
                    if self.global_step % cfg.train.log_every == 0:
                        metrics = self._metrics(stats, data_time, time.perf_counter() - t_log)
                        bar.set_postfix_str(format_postfix(metrics))
                        if self.logger is not None:
                            self.logger.log(metrics, step=self.global_step)
                        stats.reset_interval()
                        data_time, t_log = 0.0, time.perf_counter()
                    if self.global_step % cfg.train.stop_check_every == 0 and self._stop_requested(stats):
                        self.save_state()
                        return "stopped by signal; state saved"
                    if cfg.train.checkpoint_every_steps and self.global_step % cfg.train.checkpoint_every_steps == 0:
                        self.save_state()
                    if cfg.train.max_steps and self.global_step >= cfg.train.max_steps:
                        self.save_state()
                        return f"reached train.max_steps={cfg.train.max_steps}"
            self.sched_g.step()
            self.sched_d.step()
            self.epoch += 1
            self.step_in_epoch = 0
            self.end_of_epoch(self.epoch - 1)
        return "finished"

    def _stop_requested(self, stats: StepStats) -> bool:
        """The check step's one sync: has any process been asked to stop, and how long was the
        longest run of non-finite steps since the last check (the same on every process)?"""
        flags = torch.stack([torch.full((), float(self.stop_signal.requested), device=self.acc.device),
                             stats.longest_run])  # fmt: skip
        if self.acc.num_processes > 1:
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, longest = flags.tolist()
        stats.reset_check()
        if longest and self.acc.is_main_process:
            tqdm.write(f"step {self.global_step}: non-finite loss, up to {longest:.0f} consecutive steps skipped")
        if longest >= self.cfg.train.max_nonfinite_steps:
            raise TrainingError(
                f"non-finite loss in {longest:.0f} consecutive steps (epoch {self.epoch + 1}, before step "
                f"{self.global_step}); try a lower optim.lr or train.precision bf16 instead of fp16"
            )
        return bool(stop)

    def _metrics(self, stats: StepStats, data_time: float, wall: float) -> dict[str, float]:
        """Average the interval's losses (the only loss sync) and add rates."""
        means, skipped = stats.means()
        metrics = {f"train/{k}": v for k, v in means.items()}
        metrics["train/skipped_steps"] = skipped
        metrics["train/lr"] = self.opt_g.param_groups[0]["lr"]
        metrics["perf/pairs_per_s"] = stats.steps * self.cfg.data.batch_size / max(wall, 1e-9)
        metrics["perf/data_wait_frac"] = min(data_time / max(wall, 1e-9), 1.0)
        metrics["progress/epoch"] = self.epoch + self.step_in_epoch / self.loader.batches_per_epoch
        if self.acc.device.type == "cuda":
            metrics["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(self.acc.device) / 2**30
        return metrics

    def close(self) -> None:
        if self.logger is not None:
            self.logger.finish()


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="cyclegan-train",
        description="Train the ADE20K photo <-> segmentation CycleGAN. Any config field can be "
        "overridden as --section.field value (e.g. --optim.lr 1e-4).",
    )
    parser.add_argument("--config", type=Path, help="YAML config (see configs/)")
    parser.add_argument("--resume", help="'auto' or a checkpoint path (same as --train.resume)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    if args.resume:
        overrides += ["--train.resume", args.resume]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"cyclegan-train: error: {e}", file=sys.stderr)
        return 2
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=cfg.train.precision)
    if accelerator.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: autotuned conv algorithms pay off
    if accelerator.is_main_process:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), flush=True)
    if args.dry_run:
        return 0
    trainer = None
    try:
        trainer = Trainer(cfg, accelerator)
        outcome = trainer.fit()
        if accelerator.is_main_process:
            print(f"{outcome}; outputs in {cfg.train.out_dir}", flush=True)
        return 0
    except (TrainingError, ConfigError, LoaderError, checkpoint.CheckpointError) as e:
        print(f"cyclegan-train: error: {e}", file=sys.stderr)
        return 1
    finally:
        if trainer is not None:
            trainer.close()
        accelerator.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
