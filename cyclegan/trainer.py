"""The training run: the ``Trainer`` (models, optimizers, loaders, state, outputs) and ``run``, which
``cyclegan-train`` calls once the command line is parsed (see :mod:`cyclegan.train` for the commands).

At every epoch's end all processes save the training state into ``train.out_dir/checkpoints/step_N``
(see ``cyclegan.checkpoint``); then the main process writes ``real2seg_gen_{epoch}.pt``,
``seg2real_gen_{epoch}.pt``, ``real_disc_{epoch}.pt``, ``seg_disc_{epoch}.pt`` (older epochs thinned
by ``train.export_every``) and ``samples/epoch_{epoch}.png`` into ``train.out_dir``.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from torch import nn
from tqdm import tqdm

from cyclegan import checkpoint
from cyclegan.build import (
    build_buffers,
    build_models,
    build_optimizers,
    build_schedulers,
    build_step,
    prepare_models,
    scaled_lr,
    seg_encoding,
)
from cyclegan.config import Config, ConfigError, to_dict
from cyclegan.data.catalog import MANIFEST, LoaderError, shards_fingerprint, split_names
from cyclegan.data.loader import build_loader
from cyclegan.ema import GeneratorEMA
from cyclegan.evaluate import (
    accumulate_confusion,
    accumulate_photo_errors,
    evaluating,
    fid_score,
    load_fid,
    photo_scores,
    segmentation_scores,
    tracker_metrics,
)
from cyclegan.inference import InputError
from cyclegan.logging import RunLogger, format_postfix, sample_grid, save_grid, translate_samples
from cyclegan.protocol import Segmenter, accumulate_rows, load_segmenter
from cyclegan.scheduler import BufferDealer
from cyclegan.state import (
    PER_RANK,
    ModelsState,
    OptimizerState,
    RNGState,
    ScalerState,
    Stateful,
    TrainState,
    WandbState,
    check_resume_config,
)
from cyclegan.step import StepStats


class TrainingError(RuntimeError):
    """A run that cannot continue, phrased for the user."""


STOPPED = "stopped by signal; state saved"
STATUS_FILE = "status.json"


def write_status(out_dir: Path, status: str, reason: str, progress: TrainState | None = None,
                 epochs: int | None = None) -> None:
    """``out_dir/status.json``, what a requeue script reads instead of a launcher's exit code (which
    differs between launcher versions after a forwarded signal). ``status`` is ``running`` (written at
    the start; left as is when the job is killed outright), ``stopped`` (a signal, the state committed:
    resume), ``finished`` (the config's epochs or ``train.max_steps`` done) or ``failed`` (``reason``
    is the one-line error). Written by the main process only, atomically."""
    checkpoints = checkpoint.list_checkpoints(out_dir / "checkpoints")
    record = {
        "status": status,
        "reason": reason,
        "global_step": progress.global_step if progress else None,
        "epoch": progress.epoch if progress else None,
        "epochs": epochs,
        "checkpoint": str(checkpoints[-1]) if checkpoints else None,
        "updated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    checkpoint.atomic_write_json(record, out_dir / STATUS_FILE)


class StopSignal:
    """Turns SIGTERM/SIGUSR1 (cluster preemption) into a flag checked between steps."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def is_lost_peer(error: BaseException) -> bool:
    """A collective that failed because another process died or stopped answering (gloo raises a
    plain RuntimeError naming its transport; NCCL a DistError, where its watchdog does not abort first)."""
    text = str(error)
    return isinstance(error, torch.distributed.DistError) or any(
        marker in text for marker in ("gloo/transport", "Connection closed by peer", "Connection reset by peer")
    )


class Trainer:
    """Owns the run's parts; ``fit`` runs the epochs. Built on every process.

    ``parts`` is the training state: every stateful object of the run by name, which
    ``checkpoint.CheckpointManager`` saves and loads as one mapping."""

    def __init__(self, cfg: Config, accelerator: Any) -> None:
        self.cfg = cfg
        self.acc = accelerator
        self.rank, self.world_size = accelerator.process_index, accelerator.num_processes
        self.out_dir = Path(cfg.train.out_dir)
        self.stop_signal = StopSignal()
        self.fingerprint = shards_fingerprint(cfg.data.shards)
        self.manager = checkpoint.CheckpointManager(
            self.out_dir / "checkpoints", self.rank, self.world_size, cfg.train.keep_checkpoints, PER_RANK
        )
        self._check_shared_out_dir()
        saved = self._open_resume()  # the config is compared before anything is built or written

        torch.manual_seed(cfg.seed)  # the step's random draws (build_models seeds the weights itself)
        self.encoding = seg_encoding(cfg)
        self.raw = build_models(cfg, accelerator.device)
        self.ema = None
        if cfg.train.ema_decay:
            generators = {"real2seg": self.raw.real2seg, "seg2real": self.raw.seg2real}
            self.ema = GeneratorEMA(generators, cfg.train.ema_decay)
        self.opt_g, self.opt_d = build_optimizers(self.raw, cfg, world_size=self.world_size)
        self.sched_g, self.sched_d = build_schedulers((self.opt_g, self.opt_d), cfg)
        self.buffers = build_buffers(cfg, self.rank)
        self.progress = TrainState()
        self.wandb = WandbState()
        self.parts: dict[str, Stateful] = {
            "train": self.progress,
            "models": ModelsState(self.raw),
            **({"ema": self.ema} if self.ema is not None else {}),  # after "models": it may start from them
            "opt_g": OptimizerState(self.opt_g),
            "opt_d": OptimizerState(self.opt_d),
            "sched_g": self.sched_g,
            "sched_d": self.sched_d,
            "scaler": ScalerState(getattr(accelerator, "scaler", None)),
            "wandb": self.wandb,
            "photo_buffer": self.buffers[0],  # per process (PER_RANK) from here on
            "seg_buffer": self.buffers[1],
            "rng": RNGState(),
        }
        if saved is not None:
            self._load(saved)

        self.models = prepare_models(accelerator, self.raw, cfg)
        self.step = build_step(accelerator, self.models, (self.opt_g, self.opt_d), self.buffers, cfg)
        self.loader, self.val_loader, self.fid, self.segmenter = self._build_data()
        self.logger: RunLogger | None = None
        self.samples: dict[str, Any] | None = None
        if accelerator.is_main_process:
            self._start_outputs(resumed=saved is not None)

    def _build_data(self) -> tuple[Any, Any, Any, Segmenter | None]:
        """This process's training loader, and with ``train.eval_every`` its part of the validation
        split (centre crops), the FID network and the segmenter."""
        cfg = self.cfg
        kwargs = {"rank": self.rank, "world_size": self.world_size, "device": self.acc.device, "seed": cfg.seed,
                  "coloured": self.encoding.coloured}  # fmt: skip
        loader = build_loader(cfg.data, split=cfg.data.train_split, train=True, verbose=self.acc.is_main_process,
                              **kwargs)  # fmt: skip
        if loader.batches_per_epoch < 1:
            raise TrainingError(
                f"{cfg.data.shards}: split '{cfg.data.train_split}' is too small for "
                f"{self.world_size} process(es) x batch {cfg.data.batch_size}"
            )
        if not cfg.train.eval_every:
            return loader, None, None, None
        if cfg.data.val_split not in split_names(cfg.data.shards):
            raise TrainingError(
                f"{Path(cfg.data.shards) / MANIFEST}: no split '{cfg.data.val_split}' to score "
                f"(train.eval_every={cfg.train.eval_every}): shard a paired validation split "
                "(--val-photos/--val-segmentations) or set train.eval_every 0"
            )
        val_loader = build_loader(cfg.data, split=cfg.data.val_split, train=False, **kwargs)
        fid = load_fid(cfg.train.inception_weights, self.acc.device) if cfg.train.inception_weights else None
        segmenter = None
        if cfg.train.eval_segmenter:
            try:
                segmenter = load_segmenter(cfg.train.eval_segmenter, self.acc.device)
            except InputError as e:
                raise TrainingError(f"train.eval_segmenter: {e}") from None
        return loader, val_loader, fid, segmenter

    def _start_outputs(self, resumed: bool) -> None:
        """Main process: the run's config file, the fixed sample batch, the tracker; after a resume at an
        epoch's end, any of that epoch's exports a stop cut short."""
        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(self.cfg), sort_keys=False))
        self.samples = self._fixed_samples()
        self.logger = RunLogger(self.cfg.wandb, to_dict(self.cfg), self.out_dir, self.wandb.run_id)
        self.wandb.run_id = self.logger.run_id
        if resumed and self.progress.step_in_epoch == 0 and self.progress.epoch > 0:
            self._export(self.progress.epoch, only_missing=True)

    # ----------------------------------------------------------------- state
    def _check_shared_out_dir(self) -> None:
        """Collective: every process must see the files process 0 writes in ``train.out_dir``
        (checkpoints are written by all of them and read back by all of them)."""
        error = None
        token = secrets.token_hex(8)
        probe = self.out_dir / ".cyclegan-shared"
        if self.rank == 0:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                probe.write_text(token)
            except OSError as e:
                error = f"{self.out_dir}: cannot write train.out_dir ({e.strerror or e})"
        checkpoint.agree(error, self.world_size)
        if self.world_size == 1:
            return
        token = checkpoint.broadcast(token, self.world_size)
        error = None
        if self.rank != 0 and not checkpoint.sees(probe, token):
            error = (f"{self.out_dir}: does not hold what process 0 wrote there: train.out_dir must be one "
                     "folder every process sees (a shared filesystem on multi-node runs)")  # fmt: skip
        checkpoint.agree(error, self.world_size)

    def _open_resume(self) -> checkpoint.Saved | None:
        """Collective: process 0 chooses the checkpoint (so no process acts on a stale listing of
        its own), every process opens it and compares its config; all agree or all fail."""
        choice, error = None, None
        if self.rank == 0:
            try:
                choice = self._choose(self.cfg.train.resume)
            except TrainingError as e:
                error = str(e)
        choice, error = checkpoint.broadcast((choice, error), self.world_size)
        if error:
            raise TrainingError(error)
        if choice is None:
            return None
        saved, notes, error = None, [], None
        try:
            # "auto" names a folder under this process's own out_dir: on a filesystem that is not
            # shared the lookup fails here, on every process, instead of loading different steps.
            saved = checkpoint.open_checkpoint(self.manager.directory / choice)
            notes = check_resume_config(
                saved.meta["config"], self.cfg, saved.meta.get("shards_fingerprint"), self.fingerprint, str(saved.path)
            )
            if saved.world_size != self.world_size and saved.meta["train"]["step_in_epoch"] > 0:
                raise TrainingError(
                    f"{saved.path}: saved mid-epoch by {saved.world_size} process(es), and this run has "
                    f"{self.world_size}: the data position does not carry over; resume from an epoch-end "
                    "checkpoint (a step_N folder whose COMMIT.json has step_in_epoch 0) or with the same world size"
                )
        except (checkpoint.CheckpointError, ConfigError, TrainingError) as e:
            error = str(e)
        checkpoint.agree(error, self.world_size)
        if self.acc.is_main_process:
            for note in notes:
                print(note, flush=True)
        return saved

    def _choose(self, resume: str) -> str | None:
        if not resume:
            return None
        if resume == "auto":
            latest = self.manager.latest()
            return None if latest is None else latest.name
        path = Path(resume).absolute()  # an absolute path survives the join in _open_resume
        if not path.exists():
            raise TrainingError(f"{path}: resume checkpoint not found")
        return str(path)

    def _load(self, saved: checkpoint.Saved) -> None:
        left = self.manager.load(saved, self.parts)
        if left:
            self._redistribute(saved)
        steps = checkpoint.gather(self.progress.global_step, self.world_size)
        if len(set(steps)) > 1:
            raise TrainingError(f"{saved.path}: processes loaded different steps {steps}; not resuming")
        if saved.world_size != self.world_size and self.cfg.optim.lr_scaling != "none":
            self._rescale_lr()
        if self.acc.is_main_process:
            p = self.progress
            print(f"resumed from {saved.path}: epoch {p.epoch + 1}, step {p.step_in_epoch} of that epoch, "
                  f"step {p.global_step} in all", flush=True)  # fmt: skip

    def _redistribute(self, saved: checkpoint.Saved) -> None:
        """An epoch-end checkpoint of another world size: deal the saved replay buffers out to this
        run's processes; RNG of process r continues the saved process r's where there was one."""
        old = saved.world_size
        dealers = {name: BufferDealer(self.rank, self.world_size) for name in ("photo_buffer", "seg_buffer")}
        for r in range(old):  # each old file read once
            theirs = saved.rank(r)
            for name, dealer in dealers.items():
                dealer.add(theirs[name])
            if r == self.rank:
                self.parts["rng"].load_state_dict(theirs["rng"])
        for name, dealer in dealers.items():
            self.parts[name].load_state_dict(dealer.state_dict(f"{self.cfg.seed}:{name}:{self.rank}:{saved.step}"))
        counts = checkpoint.gather(len(self.buffers[0]), self.world_size)
        if self.acc.is_main_process:
            print(f"world size {old} -> {self.world_size}: replay buffers redistributed, "
                  f"{'/'.join(map(str, counts))} stored fakes per process", flush=True)  # fmt: skip

    def _rescale_lr(self) -> None:
        """optim.lr_scaling ties the LR to the global batch, which the new world size changed."""
        base = scaled_lr(self.cfg, self.world_size)
        for sched in (self.sched_g, self.sched_d):
            sched.base_lrs = [base] * len(sched.base_lrs)
            for group, rule in zip(sched.optimizer.param_groups, sched.lr_lambdas, strict=True):
                group["initial_lr"] = base
                group["lr"] = base * rule(sched.last_epoch)
        if self.acc.is_main_process:
            print(f"optim.lr_scaling={self.cfg.optim.lr_scaling}: base LR now {base:.3g} for the new global batch")

    def save_state(self) -> None:
        """Collective: every process writes its own parts; process 0 the shared ones and the commit."""
        meta = {"train": self.progress.state_dict(), "config": to_dict(self.cfg),
                "shards_fingerprint": self.fingerprint}  # fmt: skip
        self.manager.save(self.parts, self.progress.global_step, meta)

    # ------------------------------------------------------------ per epoch
    def _fixed_samples(self) -> dict[str, Any] | None:
        """The first validation items, drawn in every epoch's grid; the first training items (of each
        domain, when unpaired) where the shards have no validation split."""
        if self.cfg.train.num_samples == 0:
            return None
        data = dataclasses.replace(self.cfg.data, batch_size=self.cfg.train.num_samples, sample_size=0)
        has_val = data.val_split in split_names(data.shards)
        split = data.val_split if has_val else data.train_split
        loader = build_loader(data, split=split, rank=0, world_size=1, device=self.acc.device, seed=0, train=False,
                              coloured=self.encoding.coloured)  # fmt: skip
        if loader.batches_per_epoch < 1:
            raise TrainingError(
                f"{self.cfg.data.shards}: split '{split}' has fewer than "
                f"train.num_samples={self.cfg.train.num_samples} items"
            )
        return next(iter(loader.epoch(0)))

    def generators(self) -> tuple[nn.Module, nn.Module]:
        """(G, F) as sample grids and evaluations use them: the moving averages when train.ema_decay > 0."""
        if self.ema is not None:
            return self.ema.averages["real2seg"], self.ema.averages["seg2real"]
        return self.raw.real2seg, self.raw.seg2real

    def _export(self, number: int, only_missing: bool = False) -> None:
        """Write epoch ``number``'s four network files (main process), then thin out older ones:
        the newest epoch and every ``train.export_every``-th are kept (``train.keep_exports`` of those)."""
        averaged = self.ema is not None and self.cfg.train.export_ema
        real2seg, seg2real = self.generators() if averaged else (self.raw.real2seg, self.raw.seg2real)
        weights = "ema" if averaged else "raw"
        for role, module, suffix, kind in (
            ("real2seg", real2seg, "gen", weights),
            ("seg2real", seg2real, "gen", weights),
            ("real", self.raw.disc_real, "disc", "raw"),
            ("seg", self.raw.disc_seg, "disc", "raw"),
        ):
            path = self.out_dir / f"{role}_{suffix}_{number}.pt"
            if not (only_missing and path.is_file()):
                checkpoint.export_network(module, role, path, epoch=number, seg_mode=self.encoding.mode,
                                          weights=kind)  # fmt: skip
        generators = [self.out_dir / f"{role}_gen_{number}.pt" for role in ("real2seg", "seg2real")]
        self.logger.log_exports(generators, number, {"seg_mode": self.encoding.mode, "weights": weights})
        checkpoint.prune_exports(self.out_dir, self.cfg.train.export_every, self.cfg.train.keep_exports)

    def end_of_epoch(self, number: int, stats: StepStats) -> bool:
        """Training state first (a preemption's SIGKILL follows its SIGTERM by ~30 s), then the
        exports; the sample grid and evaluation unless a stop was requested. True: stop now."""
        self.save_state()
        stop = self._stop_requested(stats)
        if self.acc.is_main_process:
            self._export(number)
            if self.samples is not None and not stop:
                real2seg, seg2real = self.generators()
                with evaluating(real2seg), evaluating(seg2real):
                    views = translate_samples(real2seg, seg2real, self.samples, self.encoding)
                save_grid(sample_grid(views), self.out_dir / "samples" / f"epoch_{number}.png")
                self.logger.log_samples(views, self.samples, step=self.progress.global_step)
        if self.val_loader is not None and number % self.cfg.train.eval_every == 0 and not stop:
            self.evaluate(number)
        return stop

    def evaluate(self, number: int) -> dict[str, float]:
        """Validation scores of the current generators (collective: every process calls it)."""
        device = self.acc.device
        real2seg, seg2real = self.generators()
        confusion = accumulate_confusion(real2seg, self.val_loader.epoch(0), device, self.encoding)
        if self.fid is not None:
            self.fid.reset()
        errors = accumulate_photo_errors(seg2real, self.val_loader.epoch(0), device, self.encoding, self.fid)
        read = None  # F's photos of the maps at 256x256, read by the segmenter (cyclegan-eval --protocol's row)
        if self.segmenter is not None:
            rows = accumulate_rows(self.val_loader.epoch(0), device, self.segmenter, seg2real=(seg2real, self.encoding),
                                   ground_truth=False)  # fmt: skip
            read = rows["seg2real"]
        if self.acc.num_processes > 1:
            confusion = self.acc.reduce(confusion, reduction="sum")
            errors = self.acc.reduce(errors, reduction="sum")
            read = self.acc.reduce(read, reduction="sum") if read is not None else None
        scores = segmentation_scores(confusion)
        metrics = tracker_metrics(scores)
        metrics.update({f"eval/{k}": v for k, v in photo_scores(errors).items()})
        if self.fid is not None:
            metrics["eval/fid"] = fid_score(self.fid)
        if read is not None:
            read_scores = segmentation_scores(read)
            metrics["eval/seg2real_seg_pixel_acc"] = read_scores["pixel_acc"]
            metrics["eval/seg2real_seg_class_acc"] = read_scores["mean_class_acc"]
            metrics["eval/seg2real_seg_miou"] = read_scores["mean_iou"]
        if self.acc.is_main_process:
            keys = ("eval/pixel_acc", "eval/mean_iou", "eval/photo_l1", "eval/photo_psnr", "eval/fid",
                    "eval/seg2real_seg_miou")  # fmt: skip
            summary = ", ".join(f"{k[5:]}={metrics[k]:.4g}" for k in keys if k in metrics)
            tqdm.write(f"epoch {number} validation: {summary}")
            self.logger.log(metrics, step=self.progress.global_step)
            self.logger.log_class_iou(scores, step=self.progress.global_step)
        return metrics

    # ------------------------------------------------------------------ loop
    def fit(self) -> str:
        """Run until the last epoch, ``train.max_steps`` or a stop signal; say which.

        Between two log or check steps nothing here reads a device value: losses, skip counts and
        the run of non-finite steps accumulate on the device (``StepStats``). A stop that falls on an
        epoch's last step is saved as that epoch's end (resumable on any number of processes)."""
        if self.acc.is_main_process:
            self._print_plan()
            self.write_status("running", "training")
        stats, p = StepStats(self.acc.device), self.progress
        while p.epoch < self.cfg.optim.epochs:
            outcome = self._run_epoch(stats)
            if outcome is not None and p.step_in_epoch < self.loader.batches_per_epoch:
                self.save_state()
                return outcome
            self.sched_g.step()
            self.sched_d.step()
            p.epoch += 1
            p.step_in_epoch = 0
            if self.end_of_epoch(p.epoch, stats):
                return STOPPED
            if outcome is not None:
                return outcome
        return "finished"

    def write_status(self, status: str, reason: str) -> None:
        write_status(self.out_dir, status, reason, self.progress, self.cfg.optim.epochs)

    def _print_plan(self) -> None:
        cfg, acc, loader = self.cfg, self.acc, self.loader
        print(f"training {cfg.optim.epochs} epochs x {loader.batches_per_epoch} steps on {acc.num_processes} "
              f"process(es), batch {cfg.data.batch_size} per process, lr {self.opt_g.defaults['lr']:.3g}, "
              f"{cfg.train.precision} precision, device {acc.device}", flush=True)  # fmt: skip
        if loader.unpaired:
            print(f"unpaired domains: {len(loader.photos.samples)} photos, {len(loader.maps.samples)} maps; "
                  f"data.epoch_length={cfg.data.epoch_length}", flush=True)  # fmt: skip

    def _run_epoch(self, stats: StepStats) -> str | None:
        """The rest of the current epoch's steps, with logging, stop checks and step checkpoints.
        Returns why it ended early (a stop signal, ``train.max_steps``), or None at the epoch's end."""
        cfg, p, per_epoch = self.cfg, self.progress, self.loader.batches_per_epoch
        stats.reset_interval()
        data_time, t_log = 0.0, time.perf_counter()
        with tqdm(total=per_epoch, initial=p.step_in_epoch, desc=f"epoch {p.epoch + 1}/{cfg.optim.epochs}",
                  disable=not self.acc.is_main_process, dynamic_ncols=True) as bar:  # fmt: skip
            # (closed on errors too, so a one-line error starts on a fresh line)
            batches = iter(self.loader.epoch(p.epoch, skip_batches=p.step_in_epoch))
            while True:
                t0 = time.perf_counter()
                batch = next(batches, None)
                data_time += time.perf_counter() - t0
                if batch is None:
                    return None
                stats.add(self.step(batch))
                p.step_in_epoch += 1
                p.global_step += 1
                if self.ema is not None:
                    self.ema.update(p.global_step)
                bar.update(1)
                if p.global_step % cfg.train.log_every == 0:
                    metrics = self._metrics(stats, data_time, time.perf_counter() - t_log)
                    bar.set_postfix_str(format_postfix(metrics))
                    if self.logger is not None:
                        self.logger.log(metrics, step=p.global_step)
                    stats.reset_interval()
                    data_time, t_log = 0.0, time.perf_counter()
                if p.global_step % cfg.train.stop_check_every == 0 and self._stop_requested(stats):
                    return STOPPED
                if cfg.train.max_steps and p.global_step >= cfg.train.max_steps:
                    return f"reached train.max_steps={cfg.train.max_steps}"
                every = cfg.train.checkpoint_every_steps
                if every and p.global_step % every == 0 and p.step_in_epoch < per_epoch:  # the epoch's end saves
                    self.save_state()

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
            tqdm.write(
                f"step {self.progress.global_step}: non-finite loss, up to {longest:.0f} consecutive steps skipped"
            )
        if longest >= self.cfg.train.max_nonfinite_steps:
            raise TrainingError(
                f"non-finite loss in {longest:.0f} consecutive steps (epoch {self.progress.epoch + 1}, before step "
                f"{self.progress.global_step}); try a lower optim.lr or train.precision bf16 instead of fp16"
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
        metrics["progress/epoch"] = self.progress.epoch + self.progress.step_in_epoch / self.loader.batches_per_epoch
        if self.acc.device.type == "cuda":
            metrics["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(self.acc.device) / 2**30
        return metrics

    def close(self) -> None:
        if self.logger is not None:
            self.logger.finish()


def run(cfg: Config, prog: str) -> int:
    """Train with a validated config on this process; the exit code, with one ``{prog}: error: ...``
    line for a run that cannot go on (also written to ``train.out_dir/status.json``)."""
    timeout = InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=cfg.train.dist_timeout_s))
    accelerator = Accelerator(mixed_precision=cfg.train.precision, kwargs_handlers=[timeout])
    if accelerator.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: autotuned conv algorithms pay off
    if accelerator.is_main_process:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), flush=True)
    trainer = None

    def failed(message: str) -> int:
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        out_dir = Path(cfg.train.out_dir)
        if accelerator.is_main_process and out_dir.is_dir():
            write_status(out_dir, "failed", message, trainer.progress if trainer else None, cfg.optim.epochs)
        return 1

    try:
        trainer = Trainer(cfg, accelerator)
        outcome = trainer.fit()
        if accelerator.is_main_process:
            trainer.write_status("stopped" if outcome == STOPPED else "finished", outcome)
            print(f"{outcome}; outputs in {cfg.train.out_dir}", flush=True)
        return 0
    except (TrainingError, ConfigError, LoaderError, checkpoint.CheckpointError) as e:
        return failed(str(e))
    except Exception as e:
        # gloo's "[.../pair.cc:561] Connection closed by peer [host]:port. This is typically ...": the gist
        reason = re.sub(r"^\[[^\]]*\] ", "", (str(e).splitlines() or [""])[0]).split(". ")[0][:160]
        if isinstance(e, RuntimeError) and is_lost_peer(e):
            return failed(f"process {accelerator.process_index} lost contact with another process ({reason}); the "
                          "job cannot go on: restart it, and --resume auto continues from the last committed "
                          "checkpoint")  # fmt: skip
        if trainer is not None and trainer.stop_signal.requested:
            # The signal reached child processes too; torch.compile's C++ compilers die of it, for one.
            return failed(f"stopped by signal, then failed before the state could be saved ({type(e).__name__}: "
                          f"{reason}); the last committed checkpoint stands: resume with --resume auto")  # fmt: skip
        if accelerator.is_main_process and trainer is not None:  # a bug: its traceback follows
            trainer.write_status("failed", f"{type(e).__name__}: {reason}")
        raise
    finally:
        if trainer is not None:
            trainer.close()
        if accelerator.num_processes > 1:
            # The DDP-wrapped models go before the process group. A DDP reducer holding the group's last
            # reference destroys it with the GIL held, while a gloo thread freeing a finished collective's
            # tensors may be waiting for the GIL: a rank that never exits (seen with torch 2.11).
            trainer = None
            accelerator.free_memory()
        accelerator.end_training()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
