"""Sweeps on a real SLURM scheduler: the one-node cluster of ``scripts/local_slurm.sh``.

``.ci/run`` starts that cluster and runs ``pytest -m slurm``; elsewhere these tests are skipped (no
``sbatch``, no controller, or a cluster without the local one's ``urgent`` partition: they submit,
signal, requeue and preempt jobs). Each run is tiny; jobs take 1 CPU, so two run at once.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, TINY, bench_cli, bench_popen, records
from omegaconf import OmegaConf

from bench.train import Interrupted, NonFiniteLoss

LOCAL_CONF = Path(os.environ.get("SEGLOSS_SLURM_DIR", "/tmp/segloss-slurm")) / "slurm.conf"
LONG = [*TINY, "trainer.max_steps=40", "trainer.log_every=2", "trainer.ckpt_every=2"]
CPU = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def slurm_vars() -> dict[str, str]:
    """What the tests add to the environment: this checkout first, the local cluster's config."""
    extra = {"PYTHONPATH": str(ROOT)}
    if "SLURM_CONF" not in os.environ and LOCAL_CONF.exists():
        extra["SLURM_CONF"] = str(LOCAL_CONF)
    return extra


def slurm_env() -> dict[str, str]:
    return {**os.environ, **slurm_vars()}


def cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch not found (start a local cluster: scripts/local_slurm.sh start)"
    try:  # (sinfo retries for ~10 s when a configured controller is down)
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, env=slurm_env(), timeout=5
        )
    except subprocess.TimeoutExpired:
        return "no SLURM controller answers within 5 s; scripts/local_slurm.sh start"
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["?"])[-1][:200]
        return f"no SLURM controller answers ({last}); scripts/local_slurm.sh start"
    if "urgent" not in out.stdout.split():
        return "not the local test cluster of scripts/local_slurm.sh (no 'urgent' partition)"
    return None


_problem = cluster_problem()
if _problem and os.environ.get("SEGLOSS_REQUIRE_SLURM"):  # CI: a cluster that is not up is an error
    raise RuntimeError(f"SEGLOSS_REQUIRE_SLURM is set but {_problem}")


def needs_cluster(test):
    skip = pytest.mark.skipif(_problem is not None, reason=_problem or "")
    return pytest.mark.slurm(pytest.mark.slow(skip(test)))


def slurm(*args: str, check: bool = True) -> str:
    return subprocess.run(args, capture_output=True, text=True, env=slurm_env(), check=check).stdout


def launch(args: list[str], tmp: Path) -> subprocess.Popen:
    return bench_popen(["-m", *CPU, *args], tmp, env=slurm_vars())


def finish(proc: subprocess.Popen, timeout: int = 300) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"the launcher did not finish within {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def job_id(run_dir: Path) -> str:
    """The SLURM job (array task) id that ran ``run_dir``, as Hydra saved it."""
    return str(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def job_log(tmp: Path, jid: str) -> str:
    return "".join(p.read_text() for p in (tmp / "out").rglob(f"{jid}_0_log.*"))


def restarts(jid: str) -> int:
    return int(re.search(r"Restarts=(\d+)", slurm("scontrol", "show", "job", jid))[1])


def interrupt_mid_training(cases: dict[Path, tuple[subprocess.Popen, Callable]], timeout: int = 400):
    """For each ``{tmp: (launcher, interrupt)}``: ``interrupt(job id)`` once its run wrote a checkpoint.

    Returns ``{tmp: (run dir, job id)}``."""
    t0, found = time.time(), {}
    while len(found) < len(cases):
        for tmp, (proc, interrupt) in cases.items():
            ckpts = [] if tmp in found else list((tmp / "out").rglob("checkpoints/last.pt"))
            if ckpts and (ckpts[0].parents[1] / ".hydra" / "hydra.yaml").exists():
                run_dir = ckpts[0].parents[1]
                interrupt(job_id(run_dir))
                found[tmp] = run_dir, job_id(run_dir)
            assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() - t0 < timeout, "no checkpoint written"
        time.sleep(0.1)
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The same run, uninterrupted, without SLURM (1 thread, as the 1-CPU jobs)."""
    tmp = tmp_path_factory.mktemp("reference")
    res = bench_cli("+loss=dice", "+data=synthetic", *LONG, tmp=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    (rec,) = records(tmp / "out").values()
    return rec


def test_exceptions_crossing_processes_survive_a_pickle_round_trip():
    e = pickle.loads(pickle.dumps(Interrupted(7, signal.SIGTERM, chain=print)))
    assert (type(e), e.step, e.signum, e.chain, str(e)) == (
        Interrupted,
        7,
        signal.SIGTERM,
        None,
        "interrupted by signal SIGTERM at step 7; resumable",
    )
    e = pickle.loads(pickle.dumps(NonFiniteLoss(3, "dice")))
    assert (type(e), e.step, e.loss_name) == (NonFiniteLoss, 3, "dice")
    assert "'dice' became non-finite" in str(e)


@needs_cluster
def test_2x2_sweep_on_the_cpu_profile_then_relaunch_submits_nothing(tmp_path):
    args = ["name=grid", "+loss=ce,dice", "+data=synthetic", "seed=0,1", *TINY]
    code, out = finish(launch(args, tmp_path))
    assert code == 0, out[-3000:]
    recs = records(tmp_path / "out")
    assert sorted((r["loss"], r["seed"], r["status"]) for r in recs.values()) == [
        ("ce", 0, "completed"),
        ("ce", 1, "completed"),
        ("dice", 0, "completed"),
        ("dice", 1, "completed"),
    ]
    ids = {job_id(Path(r["run_dir"])) for r in recs.values()}
    (array,) = {i.split("_")[0] for i in ids}
    assert sorted(ids) == [f"{array}_{k}" for k in range(4)]  # one array job, one task per run
    names = slurm("squeue", "-h", "-t", "all", "-r", "-o", "%j", "-j", array).split()
    assert sorted(names) == sorted(f"grid/{name}" for name in recs)  # <sweep>/<run> in squeue
    jobs_before = sorted(p.name for p in (tmp_path / "out" / "grid" / ".submitit").iterdir())
    code, out = finish(launch(args, tmp_path))
    assert code == 0, out[-3000:]
    assert out.count("already completed") == 4
    assert sorted(p.name for p in (tmp_path / "out" / "grid" / ".submitit").iterdir()) == jobs_before


def _usr1(jid: str) -> None:
    slurm("scancel", "--signal=USR1", jid)


def _usr2(jid: str) -> None:
    slurm("scancel", "--signal=USR2", jid)


def _requeue(jid: str) -> None:
    slurm("scontrol", "requeue", jid)


def _preempt(jid: str) -> None:
    cpus = slurm("sinfo", "-h", "-o", "%c").split()[0]
    slurm(
        "sbatch", "-p", "urgent", f"--cpus-per-task={cpus}", "--mem=100M", "-o", "/dev/null", "--wrap=sleep 1"
    )


def assert_resumed_once_to_the_reference(tmp, proc, run_dir, jid, reference):
    code, out = finish(proc)
    assert code == 0, out[-3000:] + job_log(tmp, jid)[-3000:]
    assert "1 completed" in out
    rec = records(tmp / "out")[run_dir.name]
    assert rec["status"] == "completed"
    log = job_log(tmp, jid)
    assert log.count("resumed at step") == 1, log[-3000:]
    assert restarts(jid) == 1
    assert rec["metrics"] == reference["metrics"]
    assert [h["train/loss"] for h in rec["history"]["train"]] == [
        h["train/loss"] for h in reference["history"]["train"]
    ]


SIGNALLED = ["name=sig", "+loss=dice", "+data=synthetic", *LONG, "hydra.launcher.timeout_min=10"]


@needs_cluster
def test_sigusr1_sigusr2_and_scontrol_requeue_each_requeue_once_and_equal_an_uninterrupted_run(
    tmp_path, reference
):
    # the three cases side by side (1 CPU each), to keep the SLURM tests short
    cases = {
        tmp_path / key: (launch(SIGNALLED, tmp_path / key), interrupt)
        for key, interrupt in [("usr1", _usr1), ("usr2", _usr2), ("requeue", _requeue)]
    }
    found = interrupt_mid_training(cases)
    for tmp, (proc, _) in cases.items():
        assert_resumed_once_to_the_reference(tmp, proc, *found[tmp], reference)


@needs_cluster
def test_preempted_job_requeues_once_and_equals_an_uninterrupted_run(tmp_path, reference):
    proc = launch(SIGNALLED, tmp_path)
    ((run_dir, jid),) = interrupt_mid_training({tmp_path: (proc, _preempt)}).values()
    assert_resumed_once_to_the_reference(tmp_path, proc, run_dir, jid, reference)


def _kill_task(jid: str) -> None:
    """kill -9 of the job's Python task (as the OOM killer or a node problem would)."""
    for line in slurm("scontrol", "listpids", jid).splitlines()[1:]:
        pid = int(line.split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"submitit.core._submit" in cmdline and b"srun" not in cmdline:
            os.kill(pid, signal.SIGKILL)
            return
    raise AssertionError(f"no Python task found in job {jid}")


@needs_cluster
def test_exhausted_requeues_and_a_killed_job_end_failed_and_fail_their_sweeps(tmp_path):
    # a 2-minute job warned 90 s before its limit: any SIGUSR2 is a time-limit one, and none may
    # requeue; side by side (1 CPU each), a job whose Python task is killed must not hang the launcher
    limits = [f"hydra.launcher.{k}" for k in ("timeout_min=2", "signal_delay_s=90", "max_num_timeout=0")]
    args = ["name=fail", "+loss=dice", "+data=synthetic", *LONG]
    cases = {
        # (SLURM's own SIGUSR2 may have come first: then the job is already over)
        tmp_path / "exhausted": (
            launch([*args, *limits], tmp_path / "exhausted"),
            lambda jid: slurm("scancel", "--signal=USR2", jid, check=False),
        ),
        tmp_path / "killed": (launch(args, tmp_path / "killed"), _kill_task),
    }
    found = interrupt_mid_training(cases)
    for tmp, (proc, _) in cases.items():
        code, out = finish(proc)
        run_dir, jid = found[tmp]
        rec = records(tmp / "out")[run_dir.name]
        assert rec["status"] == "failed", rec.get("error")
        assert code != 0 and "1 failed" in out, out[-3000:]
        if tmp.name == "exhausted":
            assert rec["error"].startswith("requeues exhausted") and "max_num_timeout=0" in rec["error"]
            assert restarts(jid) == 0
        else:
            assert f"SLURM job {jid} ended" in rec["error"] and "without a result" in rec["error"]


def fake_tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_without_accounting_jobs_are_followed_with_squeue_and_one_warning(tmp_path, monkeypatch, caplog):
    from bench.launcher import queue_watcher

    fake_tool(tmp_path, "sacct", 'echo "Slurm accounting storage is disabled" >&2; exit 1')
    fake_tool(tmp_path, "squeue", 'printf "7_0|RUNNING\\n7_1|PENDING\\n8|COMPLETING\\n99|RUNNING\\n"')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    watcher = queue_watcher(delay_s=0)
    for jid in ("7_0", "7_1", "7_2", "8"):
        watcher.register_job(jid)
    with caplog.at_level("WARNING"):
        watcher.update()
        watcher.update()
    assert [r.getMessage() for r in caplog.records].count(
        "sacct does not work on this cluster (no accounting?): following jobs with squeue"
    ) == 1
    states = {j: watcher.get_state(j, mode="cache") for j in ("7_0", "7_1", "7_2", "8")}
    assert states == {"7_0": "RUNNING", "7_1": "PENDING", "7_2": "GONE", "8": "COMPLETING"}
    assert [watcher.is_done(j, mode="cache") for j in states] == [False, False, True, False]
    # slurmctld not answering: the last states stand (a job is never declared gone on a failed call)
    fake_tool(tmp_path, "squeue", "exit 1")
    watcher.update()
    assert watcher.get_state("7_0", mode="cache") == "RUNNING"


@pytest.mark.parametrize(
    ("printed", "seconds"),
    [("1-02:03:04", 93784.0), ("2:03:04", 7384.0), ("3:04", 184.0), ("UNLIMITED", None), ("", None)],
)
def test_time_left_is_read_from_squeue(printed, seconds, tmp_path, monkeypatch):
    from bench.launcher import seconds_left

    fake_tool(tmp_path, "squeue", f'echo "{printed}"')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert seconds_left("12") == seconds


def test_torch_threads_follow_the_jobs_cpus(monkeypatch):
    import torch

    from bench.__main__ import cap_threads

    before = torch.get_num_threads()
    try:
        for cpus in (1, 3):
            monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(cpus))
            cap_threads()
            assert torch.get_num_threads() == cpus
    finally:
        torch.set_num_threads(before)
