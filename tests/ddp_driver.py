"""Runs ``cyclegan.train.main`` on one rank with instruments attached: as a script under a real launcher
(``accelerate launch``), or through :func:`run` in a rank that ``train_helpers.fork_ranks`` started.

The product code runs unchanged; this driver only records, per process, which sample keys
the loader yielded, which process exported files, the final weights and step and the exit code,
into ``$CYCLEGAN_TEST_RECORD/rank{N}.pt`` (outside the run's out_dir), and its pid into ``rank{N}.pid``.

Two optional instruments stand in for the cluster: ``CYCLEGAN_TEST_SIGNAL=TERM:group@N`` makes process 0
send SIGTERM to the launcher's process group (as SLURM and ``timeout`` do) when its loader yields its
N-th batch; ``TERM:rank1@N`` (or ``KILL:rank1@N``) makes process 1 send the signal to itself only;
``CYCLEGAN_TEST_OUT_DIR_PER_RANK=1``
gives each process its own ``train.out_dir`` (``<out_dir>-rank{N}``), as nodes without a shared filesystem would have.
"""

import os
import signal
import sys
from pathlib import Path

import torch

import cyclegan.checkpoint
import cyclegan.train
import cyclegan.trainer


def run(argv: list[str]) -> int:
    """Train with the instruments the environment asks for; record what happened; the exit code."""
    record_dir = Path(os.environ["CYCLEGAN_TEST_RECORD"])
    rank = int(os.environ.get("RANK", "0"))
    seen: list[str] = []
    exports: list[str] = []
    final: dict[str, dict[str, torch.Tensor]] = {}
    steps: list[int] = []
    batches: list[int] = []
    name, _, plan = os.environ.get("CYCLEGAN_TEST_SIGNAL", "TERM:@").partition(":")
    who, _, at = plan.partition("@")
    sender = 0 if who == "group" else int(who[4:]) if who.startswith("rank") else -1
    signal_at = int(at) if rank == sender else 0

    real_build_loader = cyclegan.trainer.build_loader
    real_export = cyclegan.checkpoint.export_network
    real_close = cyclegan.trainer.Trainer.close

    class RecordingLoader:
        def __init__(self, inner) -> None:
            self.inner = inner

        def __getattr__(self, name: str):  # everything but epoch() is the real loader's
            return getattr(self.inner, name)

        def epoch(self, epoch: int, skip_batches: int = 0):
            for batch in self.inner.epoch(epoch, skip_batches):
                seen.extend(f"{epoch}:{key}" for key in batch["key"])
                batches.append(epoch)
                if len(batches) == signal_at and who == "group":
                    os.killpg(os.getpgid(os.getppid()), signal.SIGTERM)  # the launcher forwards it to every rank
                elif len(batches) == signal_at:
                    os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
                yield batch

    def build_loader(cfg, **kwargs):
        loader = real_build_loader(cfg, **kwargs)
        return RecordingLoader(loader) if kwargs.get("train", True) else loader

    def export_network(model, role, path, epoch, **kwargs):
        exports.append(str(path))
        return real_export(model, role, path, epoch, **kwargs)

    def close(self) -> None:
        final.update({n: {k: v.detach().cpu() for k, v in m.state_dict().items()} for n, m in vars(self.raw).items()})
        steps.append(self.progress.global_step)
        real_close(self)

    cyclegan.trainer.build_loader = build_loader
    cyclegan.checkpoint.export_network = export_network
    cyclegan.trainer.Trainer.close = close

    record_dir.mkdir(parents=True, exist_ok=True)
    (record_dir / f"rank{rank}.pid").write_text(str(os.getpid()))  # lets a test signal one rank
    argv = list(argv)
    if os.environ.get("CYCLEGAN_TEST_OUT_DIR_PER_RANK"):
        where = argv.index("--train.out_dir") + 1
        argv[where] = f"{argv[where]}-rank{rank}"
    code = cyclegan.train.main(argv)
    record = {"seen": seen, "exports": exports, "weights": final, "steps": steps, "code": code}
    torch.save(record, record_dir / f"rank{rank}.pt")
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
