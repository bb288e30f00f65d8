"""Multi-process robustness with real processes (gloo on CPU): per-rank committed checkpoints,
one resume decision, preemption of the whole process group, a lost node, other world sizes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import (
    REPO,
    ROLES,
    accelerate_cmd,
    fork_ranks,
    free_port,
    run_group,
    same_weights,
    subprocess_env,
    tiny_args,
)

from cyclegan import checkpoint

pytestmark = pytest.mark.slow


def launch_two(out: Path, record: Path, shards: Path, *extra: str, timeout: float = 300, **env: str):
    """``accelerate launch`` of two CPU processes running the recording driver; returns the run and
    each rank's record."""
    cmd = accelerate_cmd(
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", free_port(),
        "--mixed_precision", "no", "--dynamo_backend", "no",
        str(REPO / "tests" / "ddp_driver.py"), *tiny_args(shards, out, *extra),
    )  # fmt: skip
    # Same thread count in every run compared: CPU kernels sum in a thread-dependent order.
    proc = run_group(cmd, subprocess_env(ACCELERATE_USE_CPU="1", CYCLEGAN_TEST_RECORD=str(record), **env), timeout)
    ranks = [torch.load(p, weights_only=True) if (p := record / f"rank{r}.pt").exists() else None for r in (0, 1)]
    return proc, ranks


def fork_two(out: Path, record: Path, shards: Path, *extra: str, world_size: int = 2, **env: str):
    """Two ranks of the recording driver without a launcher (``fork_ranks``), for what the ranks decide
    among themselves; no loader workers unless asked. Returns the run and each rank's record."""
    proc = fork_ranks("ddp_driver:run", tiny_args(shards, out, "--data.num_workers", "0", *extra),
                      world_size=world_size, CYCLEGAN_TEST_RECORD=str(record), **env)  # fmt: skip
    ranks = [torch.load(p, weights_only=True) if (p := record / f"rank{r}.pt").exists() else None
             for r in range(world_size)]  # fmt: skip
    return proc, ranks


def error_lines(stderr: str) -> list[str]:
    """Our one-line errors, one per process (the two processes' output may interleave within a line)."""
    return ["cyclegan-train: error:" + part.split("\n")[0] for part in stderr.split("cyclegan-train: error:")[1:]]


def read_status(out_dir: Path) -> dict:
    return json.loads((out_dir / "status.json").read_text())


def latest(out_dir: Path) -> checkpoint.Saved:
    return checkpoint.open_checkpoint(checkpoint.list_checkpoints(out_dir / "checkpoints")[-1])


def copy_checkpoint(src: Path, out_dir: Path) -> None:
    shutil.copytree(src, out_dir / "checkpoints" / src.name)


@pytest.fixture(scope="module")
def ddp_run(train_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """An uninterrupted 2-process, 2-epoch run, also checkpointed mid-epoch (every 2 of its 4 steps)."""
    root = tmp_path_factory.mktemp("ddp_reference")
    proc, ranks = launch_two(root / "run", root / "record", train_shards, "--train.checkpoint_every_steps", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "run", ranks


def test_two_processes_ddp_each_rank_writes_its_own_part_and_rank0_commits(ddp_run):
    out, ranks = ddp_run
    for name in ranks[0]["weights"]:
        assert same_weights(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
    for epoch in (0, 1):
        keys = [{k for k in r["seen"] if k.startswith(f"{epoch}:")} for r in ranks]
        assert len(keys[0]) == len(keys[1]) == 8 and not keys[0] & keys[1]  # 16 samples, 2 x batch 2 x 4 steps
    assert ranks[1]["exports"] == [] and len(ranks[0]["exports"]) == 8
    assert sorted(p.name for p in out.glob("*.pt")) == sorted(f"{r}_{e}.pt" for r in ROLES for e in (1, 2))
    found = checkpoint.list_checkpoints(out / "checkpoints")
    assert [p.name for p in found] == ["step_000000004", "step_000000006", "step_000000008"]  # keep_checkpoints 3
    for folder in found:
        assert sorted(p.name for p in folder.iterdir()) == ["COMMIT.json", "rank0.pt", "rank1.pt", "shared.pt"]
    saved = latest(out)
    assert saved.world_size == 2 and saved.meta["train"] == {"epoch": 2, "step_in_epoch": 0, "global_step": 8}
    # The per-rank parts differ (each process has its own replay buffers); nothing was gathered.
    buffers = [saved.rank(r)["photo_buffer"] for r in (0, 1)]
    assert not torch.equal(buffers[0]["items"], buffers[1]["items"])
    assert "photo_buffer" not in saved.shared() and "models" in saved.shared()
    assert [r["code"] for r in ranks] == [0, 0]
    status = read_status(out)
    assert (status["status"], status["reason"], status["global_step"]) == ("finished", "finished", 8)


def test_sigterm_to_the_process_group_saves_then_resume_matches(ddp_run, train_shards: Path, tmp_path: Path):
    """As SLURM does: SIGTERM to the launcher's group mid-epoch (the launcher forwards it to both ranks).
    Every rank exits 0 after a committed save, and status.json says so. The launcher's own exit code is
    not asserted: it differs between launcher versions (1 or 143), which is why the README points
    requeue scripts at status.json."""
    out, record = tmp_path / "run", tmp_path / "record"
    proc, ranks = launch_two(out, record, train_shards, "--train.stop_check_every", "1",
                             CYCLEGAN_TEST_SIGNAL="TERM:group@6")  # fmt: skip
    assert [r["code"] for r in ranks] == [0, 0], proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stopped by signal; state saved" in proc.stdout
    saved = latest(out)
    assert 6 <= saved.step < 8 and saved.meta["train"]["step_in_epoch"] > 0  # mid-epoch 2, committed
    assert ranks[0]["steps"] == ranks[1]["steps"] == [saved.step]
    status = read_status(out)
    assert (status["status"], status["global_step"], status["epoch"], status["epochs"]) == ("stopped", saved.step, 1, 2)
    assert status["checkpoint"] == str(out / "checkpoints" / f"step_{saved.step:09d}")
    # The resume needs no launcher, and it reads without loader workers: the batches do not depend on them.
    proc, ranks = fork_two(out, tmp_path / "record2", train_shards, "--resume", "auto")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reference = ddp_run[1][0]["weights"]
    for name, weights in ranks[0]["weights"].items():
        assert same_weights(weights, reference[name]), name


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(train_shards: Path, tmp_path: Path):
    """Only process 1 is signalled (at its 5th batch); the ranks agree at the next check step (every 3),
    save once and exit 0."""
    out = tmp_path / "run"
    proc, ranks = fork_two(out, tmp_path / "record", train_shards, "--train.stop_check_every", "3",
                           CYCLEGAN_TEST_SIGNAL="TERM:rank1@5")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stopped by signal; state saved" in proc.stdout
    assert [r["code"] for r in ranks] == [0, 0] and ranks[0]["steps"] == ranks[1]["steps"] == [6]
    assert latest(out).step == 6


def test_a_killed_rank_on_one_node_ends_the_job_without_a_hang(train_shards: Path, tmp_path: Path):
    """Process 1 is SIGKILLed at its 5th batch. The launcher's agent SIGTERMs the survivor, whose stop
    then finds its peer gone: it exits 1 with one line (no collective save with a dead peer, no hang)."""
    t0 = time.monotonic()
    proc, ranks = launch_two(tmp_path / "run", tmp_path / "record", train_shards, "--optim.epochs", "20",
                             "--train.dist_timeout_s", "30", "--data.num_workers", "0",
                             CYCLEGAN_TEST_SIGNAL="KILL:rank1@5")  # fmt: skip
    assert time.monotonic() - t0 < 90  # startup and the agent's own wait included; far below a hang
    assert proc.returncode != 0 and ranks[1] is None and ranks[0]["code"] == 1
    assert error_lines(proc.stderr)[0].startswith("cyclegan-train: error: process 0 lost contact with another")
    assert latest(tmp_path / "run").step == 4  # the epoch-1 commit stays the one to resume


def test_a_stop_on_an_epochs_last_step_saves_an_epoch_end_state(train_shards: Path, tmp_path: Path):
    """One process, signalled so that the agreed stop falls on the last of the epoch's 8 steps: the state
    is saved as an epoch end (so any world size can resume it), the epoch's exports are written, and the
    sample grid is skipped."""
    out = tmp_path / "run"
    proc, _ = fork_two(out, tmp_path / "record", train_shards, "--train.stop_check_every", "4", world_size=1,
                       CYCLEGAN_TEST_SIGNAL="TERM:rank0@6")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stopped by signal; state saved" in proc.stdout
    assert latest(out).meta["train"] == {"epoch": 1, "step_in_epoch": 0, "global_step": 8}
    assert sorted(p.name for p in out.glob("*.pt")) == sorted(f"{r}_1.pt" for r in ROLES)
    assert not (out / "samples" / "epoch_1.png").exists()


def test_world_size_2_to_1_at_an_epoch_end(ddp_run, train_shards: Path, tmp_path: Path, capsys):
    from cyclegan.train import main

    out, _ = ddp_run
    mid, end = out / "checkpoints" / "step_000000006", out / "checkpoints" / "step_000000004"
    copy_checkpoint(mid, tmp_path / "mid")
    assert main(tiny_args(train_shards, tmp_path / "mid", "--resume", "auto")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "saved mid-epoch by 2 process(es), and this run has 1" in err[0]
    assert "resume from an epoch-end checkpoint" in err[0]

    copy_checkpoint(end, tmp_path / "end")
    assert main(tiny_args(train_shards, tmp_path / "end", "--resume", "auto", "--train.export_every", "2")) == 0
    printed = capsys.readouterr().out
    assert "world size 2 -> 1: replay buffers redistributed, 4 stored fakes per process" in printed
    assert "resume changes train.export_every: 1 -> 2" in printed
    # Epoch 1's exports (restored from the checkpoint at start) were thinned once epoch 2's were written.
    assert sorted(p.name for p in (tmp_path / "end").glob("*.pt")) == sorted(f"{r}_2.pt" for r in ROLES)
    saved = latest(tmp_path / "end")
    # Epoch 2 on one process: all 16 samples in 8 steps (4 + 8 = 12 steps in all), LR decayed to 0 after it.
    assert saved.world_size == 1 and saved.meta["train"] == {"epoch": 2, "step_in_epoch": 0, "global_step": 12}
    assert saved.shared()["opt_g"]["param_groups"][0]["lr"] == pytest.approx(0.0)
    logged = [json.loads(line) for line in (tmp_path / "end" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [6, 8, 10, 12] and {m["train/lr"] for m in logged} == {2e-4}


def test_world_size_1_to_2_at_an_epoch_end(reference_run: Path, train_shards: Path, tmp_path: Path):
    epoch1 = next(p for p in checkpoint.list_checkpoints(reference_run / "checkpoints")
                  if checkpoint.open_checkpoint(p).meta["train"]["epoch"] == 1)  # fmt: skip
    out = tmp_path / "run"
    copy_checkpoint(epoch1, out)
    proc, ranks = fork_two(out, tmp_path / "record", train_shards, "--resume", "auto")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world size 1 -> 2: replay buffers redistributed, 2/2 stored fakes per process" in proc.stdout
    # Epoch 2's order follows the new world size: disjoint halves, 4 steps of batch 2 each.
    keys = [{k for k in r["seen"] if k.startswith("1:")} for r in ranks]
    assert len(keys[0]) == len(keys[1]) == 8 and not keys[0] & keys[1]
    assert ranks[0]["steps"] == ranks[1]["steps"] == [8 + 4]
    for name in ranks[0]["weights"]:
        assert same_weights(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
    assert latest(out).world_size == 2


def test_out_dir_that_is_not_shared_fails_at_start_on_every_rank(train_shards: Path, tmp_path: Path):
    proc, ranks = fork_two(tmp_path / "run", tmp_path / "record", train_shards, CYCLEGAN_TEST_OUT_DIR_PER_RANK="1")
    assert [r["code"] for r in ranks] == [1, 1]
    lines = error_lines(proc.stderr)
    assert len(lines) == 2 and all("train.out_dir must be one folder every process sees" in line for line in lines)
    assert not (tmp_path / "run-rank0" / "checkpoints").exists()


@pytest.mark.parametrize("rank1_has", ["older", "renamed"])
def test_ranks_never_resume_from_different_steps(rank1_has: str, ddp_run, train_shards: Path, tmp_path: Path):
    """Each rank has its own out_dir, whose probe file is process 0's (a listing that is stale, not
    missing). Process 0 chooses step 8; rank 1 has only step 4, either as it is (the choice is not
    there: one line) or under step 8's name (it loads step 4: the step check stops both)."""
    checkpoints = ddp_run[0] / "checkpoints"
    copy_checkpoint(checkpoints / "step_000000008", tmp_path / "run-rank0")
    target = tmp_path / "run-rank1" / "checkpoints" / ("step_000000004" if rank1_has == "older" else "step_000000008")
    shutil.copytree(checkpoints / "step_000000004", target)
    (tmp_path / "run-rank0" / ".cyclegan-shared").write_text("")
    (tmp_path / "run-rank1" / ".cyclegan-shared").symlink_to(tmp_path / "run-rank0" / ".cyclegan-shared")
    proc, ranks = fork_two(tmp_path / "run", tmp_path / "record", train_shards, "--resume", "auto",
                           CYCLEGAN_TEST_OUT_DIR_PER_RANK="1")  # fmt: skip
    assert [r["code"] for r in ranks] == [1, 1], proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    expected = "step_000000008: no such file" if rank1_has == "older" else "processes loaded different steps [8, 4]"
    assert len(lines) == 2 and all(expected in line for line in lines), lines


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            kids = [int(k) for k in (task / "children").read_text().split()] if (task / "children").exists() else []
            found += kids
            todo += kids
    return found


def start_nodes(args: list[str], port: str) -> list[subprocess.Popen]:
    env = subprocess_env(USE_CPU="1", NUM_NODES="2", MAIN_ADDR="127.0.0.1", MAIN_PORT=port, GPUS_PER_NODE="1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return [
        subprocess.Popen(["bash", str(REPO / "launch" / "node.sh"), *args], cwd=REPO, env={**env, "NODE_RANK": str(r)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for r in (0, 1)
    ]  # fmt: skip


def end_nodes(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        for pid in [node.pid, *descendants(node.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # each torchrun worker has a session of its own
        node.communicate()


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_lost_node_ends_the_survivor_then_resume_completes(how: str, train_shards: Path, tmp_path: Path):
    """Two "nodes" on localhost (launch/node.sh, gloo, one process each). Once epoch 1 is committed,
    node 1 is lost: its launcher and processes SIGKILLed (the survivor's sockets close), or frozen
    with SIGSTOP (a node that vanished from the network: nothing closes, only the timeout ends the wait).
    Node 0 must exit non-zero within train.dist_timeout_s plus a margin, with one line naming the cause;
    then (checked once) a relaunch with --resume auto completes the run from the committed checkpoint."""
    timeout_s = 8
    out = tmp_path / "run"
    args = tiny_args(train_shards, out, "--optim.epochs", "3", "--optim.decay_epoch", "1",
                     "--train.dist_timeout_s", str(timeout_s), "--data.num_workers", "0")  # fmt: skip
    nodes = start_nodes(args, free_port())
    try:
        commit = out / "checkpoints" / "step_000000004" / "COMMIT.json"
        deadline = time.monotonic() + 120
        while not commit.exists() and time.monotonic() < deadline and nodes[0].poll() is None:
            time.sleep(0.02)
        assert commit.exists(), nodes[0].communicate()[0][-3000:]
        lost = nodes[1]
        for pid in [lost.pid, *descendants(lost.pid)]:
            os.kill(pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        t0 = time.monotonic()
        output = nodes[0].communicate(timeout=timeout_s + 60)[0]
        elapsed = time.monotonic() - t0
    finally:
        end_nodes(nodes)
    assert nodes[0].returncode != 0
    assert elapsed < timeout_s + 30, elapsed
    lines = [line for line in output.splitlines() if "lost contact with another process" in line]
    assert len(lines) == 1 and lines[0].startswith("cyclegan-train: error: process 0 lost contact"), output[-3000:]
    assert latest(out).step < 12  # the run did not finish
    status = read_status(out)
    assert status["status"] == "failed" and status["reason"] == lines[0].removeprefix("cyclegan-train: error: ")
    if how == "frozen":
        return  # the relaunch below is the same in both cases

    nodes = start_nodes([*args, "--resume", "auto"], free_port())
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:
        end_nodes(nodes)
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert "resumed from" in outputs[0]
    assert latest(out).meta["train"] == {"epoch": 3, "step_in_epoch": 0, "global_step": 12}
    assert read_status(out)["status"] == "finished"
