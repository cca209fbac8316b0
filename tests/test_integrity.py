"""Result integrity with real processes: a run is its config, one writer per run directory, signals,
sweep exit status, cleanup and names (the reproductions of issue 10)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from helpers import TINY, bench_cli, bench_popen, records

from bench.lock import RunLock
from bench.naming import run_name
from bench.train import load_checkpoint

pytestmark = pytest.mark.slow
LONG = [*TINY, "trainer.max_steps=40", "trainer.log_every=2", "trainer.ckpt_every=1"]


def wait_for_checkpoint(out, proc, timeout=300):
    """The run directory below ``out`` once its ``checkpoints/last.pt`` exists (proc still running)."""
    t0 = time.time()
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        found = list(out.rglob("last.pt"))
        if found:
            return found[0].parent.parent
        time.sleep(0.05)


def recipe(folder, lr):
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    text = f"# @package _global_\ntrainer:\n  optimizer:\n    lr: {lr}\n"
    (folder / "experiment" / "mine.yaml").write_text(text)


def test_edited_recipe_is_never_resumed_and_force_starts_from_scratch(tmp_path):
    conf = tmp_path / "conf"
    recipe(conf, 0.001)
    args = ["--config-dir", str(conf), "+experiment=mine", "+loss=ce", "+data=synthetic", *LONG]
    proc = bench_popen(args, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "out", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) != 0
    before = json.loads((run_dir / "record.json").read_text())
    assert before["status"] == "interrupted" and before["config"]["trainer"]["optimizer"]["lr"] == 0.001
    step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]

    recipe(conf, 0.05)  # the user edits the recipe and re-launches the same command
    refused = bench_cli(*args, tmp=tmp_path)
    assert refused.returncode != 0
    assert "trainer.optimizer.lr: 0.001 → 0.05" in refused.stderr and "force=true" in refused.stderr
    assert "resumed" not in refused.stdout
    assert json.loads((run_dir / "record.json").read_text()) == before  # nothing touched
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == step

    forced = bench_cli(*args, "force=true", tmp=tmp_path)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "resumed" not in forced.stdout and "starting from scratch" in forced.stdout
    after = json.loads((run_dir / "record.json").read_text())
    assert after["status"] == "completed" and after["config"]["trainer"]["optimizer"]["lr"] == 0.05
    assert after["fingerprint"] != before["fingerprint"]
    assert after["timings"]["steps"] == 40 and after["history"]["train"][0]["step"] == 2  # trained from 0
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["fingerprint"] == after["fingerprint"]
    (old,) = (run_dir / "superseded").iterdir()  # moved aside, never loaded, not deleted
    assert json.loads((old / "record.superseded.json").read_text()) == before
    assert load_checkpoint(old / "checkpoints" / "last.pt")["step"] == step
    assert list(records(tmp_path / "out")) == [run_dir.name]  # readers see the new record only


def test_a_second_launch_of_a_running_run_exits_naming_the_holder(tmp_path):
    args = ["+loss=ce", "+data=synthetic", *LONG, "trainer.max_steps=5000"]  # still running when asked
    first = bench_popen(args, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "out", first)
    second = bench_cli(*args, tmp=tmp_path)
    assert second.returncode != 0
    assert f"in use by pid {first.pid} on host {socket.gethostname()}" in second.stderr
    assert first.poll() is None  # untouched: the first goes on, then stops cleanly when asked
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=120)
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["status"] == "interrupted", out[-3000:]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] > 0


def test_sigterm_to_a_local_sweep_checkpoints_the_job_and_stops_the_sweep(tmp_path):
    proc = bench_popen(["-m", "+loss=ce,dice", "+data=synthetic", *LONG], tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "out", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "sweep stopped" in out
    recs = records(tmp_path / "out")
    assert list(recs) == [run_dir.name] and recs[run_dir.name]["status"] == "interrupted"  # no next job
    assert "loss=ce" in run_dir.name and load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] > 0


def test_a_second_sigint_aborts_at_once_and_the_run_stays_resumable(tmp_path):
    args = ["+loss=ce", "+data=synthetic", *LONG, "trainer.log_every=40"]  # first Ctrl-C waits ~40 steps
    proc = bench_popen(args, tmp_path)
    run_dir = wait_for_checkpoint(tmp_path / "out", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and time.time() - t0 < 30, out[-3000:]
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["status"] == "interrupted" and "SIGINT" in rec["error"]
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] < 40


def test_ctrl_c_to_the_process_group_with_loader_workers_interrupts_the_run(tmp_path):
    args = ["+loss=ce", "+data=synthetic", *LONG, "data.num_workers=1"]
    proc = bench_popen(args, tmp_path, start_new_session=True)  # its own group, as a terminal job
    run_dir = wait_for_checkpoint(tmp_path / "out", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the main process and its workers
    out, _ = proc.communicate(timeout=120)
    rec = json.loads((run_dir / "record.json").read_text())
    assert proc.returncode != 0 and rec["status"] == "interrupted", out[-3000:]
    assert "SIGINT" in rec["error"] and load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] < 40


def test_a_sweep_whose_jobs_write_no_record_exits_non_zero_listing_each(tmp_path):
    args = ["-m", "+loss=ce", "+data=synthetic", *TINY]
    run_dir = tmp_path / "out" / "default" / run_name(args[1:])
    run_dir.mkdir(parents=True)
    with RunLock(run_dir):  # another live process writes that run
        res = bench_cli(*args, tmp=tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "1 locked" in res.stderr and f"locked: {run_dir.name}: " in res.stderr
    assert not (run_dir / "record.json").exists()


def test_cleanup_touches_only_the_runs_own_temp_files(tmp_path):
    launch = tmp_path / "launch"  # hydra.run.dir=. from this folder
    theirs = [launch / ".notes.tmp", launch / "project" / ".cache.tmp"]
    theirs.append(launch / "project" / ".record.json.x.tmp")  # same pattern, another folder
    ours = [launch / ".record.json.abc.tmp", launch / "checkpoints" / ".last.pt.def.tmp"]
    for p in theirs + ours:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("keep me")
    res = bench_cli("+loss=ce", "+data=synthetic", *TINY, f"hydra.run.dir={launch}", tmp=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert all(p.read_text() == "keep me" for p in theirs)
    assert not any(p.exists() for p in ours)


def test_names_are_sanitised_and_secrets_masked_in_names_records_logs_and_wandb(tmp_path):
    secrets = ["sk-test-0123456789abcdef", "tok-9876543210fedcba", "sk-env-0123456789abcdef0123456789abcdef"]
    res = bench_cli(
        "+loss=ce",
        "+data=synthetic",
        *TINY,
        "name=../../x",
        "logger=wandb",
        f"+logger.api_key={secrets[0]}",
        f"+data.access_token={secrets[1]}",
        tmp=tmp_path,
        env={"WANDB_MODE": "offline", "WANDB_API_KEY": secrets[2]},  # a key in the environment too
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert not any(s in res.stdout + res.stderr for s in secrets)
    (rec_path,) = (tmp_path / "out").rglob("record.json")  # written below the output folder
    assert rec_path.parent.parent.parent == tmp_path / "out"
    rec = json.loads(rec_path.read_text())
    assert "access_token=___" in rec["name"] and rec["config"]["logger"]["api_key"] == "***"
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files)  # the W&B run was written (offline)
    for path in files:
        assert not any(s.encode() in path.read_bytes() for s in secrets), path
        assert not any(s in str(path) for s in secrets)
