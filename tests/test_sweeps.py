"""Cluster-scale behaviour with real processes: submitit, signals, kill -9, fault isolation, DDP."""

from __future__ import annotations

import json
import random
import signal
import sys
import time

import pytest
from helpers import TINY, bench_cli, bench_popen, records

from bench.results.load import load_records
from bench.results.table import summary_table
from bench.train import load_checkpoint

pytestmark = pytest.mark.slow
LONG = [*TINY, "trainer.max_steps=40", "trainer.log_every=2", "trainer.ckpt_every=1"]
RUN = ["+loss=ce", "+data=synthetic", *LONG]


def wait_for_checkpoint(out, proc, newer_than=0.0, timeout=300):
    """The run dir below ``out`` once ``proc`` wrote ``checkpoints/last.pt`` (after ``newer_than``)."""
    t0 = time.time()
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        for ckpt in out.rglob("last.pt"):
            try:
                if ckpt.stat().st_mtime > newer_than:
                    return ckpt.parent.parent
            except FileNotFoundError:  # between the two renames of an atomic write
                pass
        time.sleep(0.02)


def only_run_dir(tmp):
    (run_dir,) = {p.parent for p in (tmp / "out").rglob("record.json")}
    return run_dir


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One data folder for the runs compared with each other (the data root is part of a run)."""
    return {"SEGLOSS_DATA": str(tmp_path_factory.mktemp("data"))}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, shared):
    """The record of the uninterrupted run ``RUN``."""
    tmp = tmp_path_factory.mktemp("straight")
    res = bench_cli(*RUN, tmp=tmp, env=shared)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((only_run_dir(tmp) / "record.json").read_text())


def assert_same_run(a, b):
    assert b["status"] == "completed" and b["fingerprint"] == a["fingerprint"]
    assert a["metrics"] == b["metrics"]
    curve = [h["train/loss"] for h in a["history"]["train"]]
    assert curve == [h["train/loss"] for h in b["history"]["train"]]


def test_submitit_local_sweep_writes_every_record(tmp_path):
    # two jobs, one process each (a sweep over several keys is test_cli's, with the basic launcher)
    args = ("-m", "hydra/launcher=local", "+loss=ce", "+data=synthetic", "seed=0,1", *TINY)
    res = bench_cli(*args, tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = records(tmp_path / "out")
    assert sorted((r["loss"], r["seed"], r["status"]) for r in recs.values()) == [
        ("ce", 0, "completed"),
        ("ce", 1, "completed"),
    ]
    jobs = [p for p in (tmp_path / "out" / "default" / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 2  # each went through submitit


def test_failed_job_is_recorded_its_sibling_completes_and_configs_are_not_averaged(tmp_path):
    args = ("-m", "+loss=ce", "+data=synthetic", *TINY, "trainer.optimizer.lr=1e-3,1e30")
    res = bench_cli(*args, tmp=tmp_path)
    assert res.returncode == 1
    assert "1 completed, 1 failed" in res.stderr and "failed: " in res.stderr
    statuses = sorted(r["status"] for r in records(tmp_path / "out").values())
    assert statuses == ["completed", "failed"]
    (failed,) = [r for r in records(tmp_path / "out").values() if r["status"] == "failed"]
    assert "non-finite" in failed["error"] and failed["failed_step"] == 1
    # two learning rates are two configs: two rows of one seed each, never "ce, seeds 2"
    table = summary_table(load_records([tmp_path / "out"])).set_index("variant")
    assert sorted(table.index) == ["trainer.optimizer.lr=0.001", "trainer.optimizer.lr=1e+30"]
    assert table["seeds"].tolist() == [1, 0] and table["failed"].tolist() == [0, 1]
    # a re-launch skips both, but the failure still fails the sweep and is listed with its reason
    again = bench_cli(*args, tmp=tmp_path)
    assert "failed before" in again.stdout and "already completed" in again.stdout
    assert again.returncode == 1 and "1 completed, 1 failed" in again.stderr
    assert "non-finite" in again.stderr and "earlier launch" in again.stderr


def test_signals_then_resumes_equal_an_uninterrupted_run(tmp_path, straight, shared):
    """SIGTERM (preemption), resume, SIGINT (Ctrl-C) of the resumed run, resume again: the record
    equals the uninterrupted run's, loss curve included."""
    run_dir, newer_than, last_step = None, 0.0, 0
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = bench_popen(RUN, tmp_path, env=shared)
        run_dir = wait_for_checkpoint(tmp_path / "out", proc, newer_than=newer_than)
        proc.send_signal(signum)
        assert proc.wait(120) != 0
        newer_than = time.time()
        interrupted = json.loads((run_dir / "record.json").read_text())
        assert interrupted["status"] == "interrupted", interrupted.get("error")
        assert signal.Signals(signum).name in interrupted["error"]
        step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
        assert last_step < step < 40
        last_step = step
    resumed = bench_cli(*RUN, tmp=tmp_path, env=shared)
    assert resumed.returncode == 0 and f"resumed at step {last_step}" in resumed.stdout
    assert_same_run(straight, json.loads((run_dir / "record.json").read_text()))


def test_kill_9_never_leaves_a_corrupt_record_or_checkpoint_in_use(tmp_path, straight, shared):
    rng = random.Random(0)
    last_step, killed_at = 0, 0.0
    for _ in range(2):
        proc = bench_popen(RUN, tmp_path, env=shared)
        run_dir = wait_for_checkpoint(tmp_path / "out", proc, newer_than=killed_at)  # this launch wrote one
        time.sleep(rng.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        killed_at = time.time()
        json.loads((run_dir / "record.json").read_text())  # always complete JSON
        step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
        assert step > last_step  # a valid checkpoint of this launch's progress
        last_step = step
    done = bench_cli(*RUN, tmp=tmp_path, env=shared)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed at step {last_step}" in done.stdout
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["timings"]["steps"] == 40
    assert_same_run(straight, rec)
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
