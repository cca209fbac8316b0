"""Cluster-scale behaviour with real processes: submitit, signals, kill -9, fault isolation, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, TINY, bench_cli, records

from bench.train import load_checkpoint

pytestmark = pytest.mark.slow
LONG = [*TINY, "trainer.max_steps=40", "trainer.log_every=2", "trainer.ckpt_every=2"]


def popen(args: list[str], tmp) -> subprocess.Popen:
    env = {
        **os.environ,
        "SEGLOSS_OUTPUT": str(tmp / "out"),
        "SEGLOSS_DATA": str(tmp / "data"),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(path, proc, timeout=300):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


def only_run_dir(tmp):
    (run_dir,) = {p.parent for p in (tmp / "out").rglob("record.json")}
    return run_dir


def test_submitit_local_sweep_writes_every_record_and_relaunch_skips(tmp_path):
    args = ("-m", "hydra/launcher=local", "+loss=ce,dice", "+data=synthetic", "seed=0,1", *TINY)
    res = bench_cli(*args, tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = records(tmp_path / "out")
    assert sorted((r["loss"], r["seed"], r["status"]) for r in recs.values()) == [
        ("ce", 0, "completed"),
        ("ce", 1, "completed"),
        ("dice", 0, "completed"),
        ("dice", 1, "completed"),
    ]
    assert list((tmp_path / "out" / "default" / ".submitit").iterdir())  # went through submitit
    again = bench_cli(*args[:1], *args[2:], tmp=tmp_path)  # relaunch (local launcher is enough)
    assert again.returncode == 0 and (again.stdout + again.stderr).count("already completed") == 4


def test_failed_job_is_recorded_and_its_sibling_completes(tmp_path):
    res = bench_cli(
        "-m", "+loss=ce", "+data=synthetic", *TINY, "trainer.optimizer.lr=1e-3,1e30", tmp=tmp_path
    )
    assert res.returncode == 1
    assert "1 completed, 1 failed" in res.stderr
    statuses = sorted(r["status"] for r in records(tmp_path / "out").values())
    assert statuses == ["completed", "failed"]
    (failed,) = [r for r in records(tmp_path / "out").values() if r["status"] == "failed"]
    assert "non-finite" in failed["error"] and failed["failed_step"] == 1
    again = bench_cli(
        "-m", "+loss=ce", "+data=synthetic", *TINY, "trainer.optimizer.lr=1e-3,1e30", tmp=tmp_path
    )
    assert "failed before" in again.stdout and "already completed" in again.stdout


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = ["+loss=dice", "+data=synthetic", *LONG]
    straight = bench_cli(*args, tmp=tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-3000:]
    proc = popen(args, tmp_path / "b")
    wait_for(tmp_path / "b" / "out", proc)
    run_dir = None
    while run_dir is None or not (run_dir / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        found = list((tmp_path / "b" / "out").rglob("record.json"))
        run_dir = found[0].parent if found else None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) != 0
    interrupted = json.loads((run_dir / "record.json").read_text())
    assert interrupted["status"] == "interrupted", interrupted.get("error")
    step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    assert 0 < step < 40
    resumed = bench_cli(*args, tmp=tmp_path / "b")
    assert resumed.returncode == 0 and f"resumed at step {step}" in resumed.stdout
    a = json.loads((only_run_dir(tmp_path / "a") / "record.json").read_text())
    b = json.loads((run_dir / "record.json").read_text())
    assert b["status"] == "completed"
    assert a["metrics"] == b["metrics"]
    assert [h["train/loss"] for h in a["history"]["train"]] == [
        h["train/loss"] for h in b["history"]["train"]
    ]


def test_kill_9_never_leaves_a_corrupt_record_or_checkpoint_in_use(tmp_path):
    args = ["+loss=ce", "+data=synthetic", *LONG, "trainer.ckpt_every=1", "trainer.log_every=1"]
    for delay in (0.3, 0.7, 1.1):
        proc = popen(args, tmp_path)
        wait_for(tmp_path / "out", proc)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        for rec in (tmp_path / "out").rglob("record.json"):
            json.loads(rec.read_text())  # always complete JSON
        for ckpt in (tmp_path / "out").rglob("last.pt"):
            assert load_checkpoint(ckpt)["step"] >= 1
    done = bench_cli(*args, tmp=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (rec,) = records(tmp_path / "out").values()
    assert rec["status"] == "completed" and rec["timings"]["steps"] == 40
    assert not list((tmp_path / "out").rglob(".*.tmp"))


def test_two_process_gloo_run_matches_the_single_process_run(tmp_path):
    args = ["+loss=ce", "+data=synthetic", *TINY, "trainer.max_steps=6", "data.batch_size=4"]
    one = bench_cli(*args, tmp=tmp_path / "one")
    two = bench_cli(
        *args,
        "data.batch_size=2",
        tmp=tmp_path / "two",
        launcher=f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=2 -m bench",
    )
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    (a,) = records(tmp_path / "one" / "out").values()
    (b,) = records(tmp_path / "two" / "out").values()
    assert b["status"] == "completed"
    # same data order (rank r takes every 2nd draw), same cases and rows in the same order
    assert [(r["case"], r["class"]) for r in a["metrics"]["per_case"]] == [
        (r["case"], r["class"]) for r in b["metrics"]["per_case"]
    ]
    # BatchNorm sees 2 instead of 4 images per step on CPU (no SyncBatchNorm), hence a tolerance
    la = [h["train/loss"] for h in a["history"]["train"]]
    lb = [h["train/loss"] for h in b["history"]["train"]]
    assert lb == pytest.approx(la, rel=0.02)
    for key in ("dsc", "iou"):
        assert b["metrics"]["mean"][key] == pytest.approx(a["metrics"]["mean"][key], abs=0.05)
    assert b["metrics"]["mean"]["hd95"] == pytest.approx(a["metrics"]["mean"]["hd95"], rel=0.2)


def test_no_secret_lands_in_records_logs_or_saved_configs(tmp_path):
    secret = "sk-test-0123456789abcdef0123456789abcdef"
    res = bench_cli(
        "+loss=ce",
        "+data=synthetic",
        *TINY,
        "logger=wandb",
        tmp=tmp_path,
        env={"WANDB_API_KEY": secret, "WANDB_MODE": "offline"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert secret not in res.stdout + res.stderr
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
