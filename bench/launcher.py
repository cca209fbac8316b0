"""Hydra's submitit SLURM launcher, made safe for long sweeps on real clusters.

``hydra/launcher=slurm`` and ``slurm_cpu`` use :class:`SlurmLauncher`; on top of Hydra's plugin:

* **Every interruption ends in a requeue.** In the job, SIGTERM (``scontrol requeue``, preemption),
  SIGUSR1 (``sbatch --signal=USR1@…``) and SIGUSR2 (submitit's time-limit warning) make the run
  checkpoint and record ``interrupted`` (``bench.train``); then SIGTERM leaves the requeue to SLURM
  (which sent it), and SIGUSR1/SIGUSR2 requeue the job here, through submitit's pickled submission.
  The job exits without a result, so the launcher keeps waiting for the resumed job.
* **Requeue budget.** A signal that comes within ``signal_delay_s`` + 60 s of the time limit is a
  timeout; at most ``max_num_timeout`` of them are requeued. The next one marks the run ``failed``
  (``requeues exhausted``), which fails the sweep. Other signals (preemption) always requeue.
* **Completed runs are not submitted again** (nor failed ones without ``retry_failed``): the same
  rule as ``bench.run``, checked in the launcher before ``sbatch``.
* **Readable job names**: the array is named after the sweep (``name``) and each task
  ``<sweep>/<run name>`` in ``squeue``.
* **No accounting needed.** Job states come from ``sacct`` when it works, else from ``squeue`` (one
  warning); a job that left the queue without a result (``kill -9``, node failure, ``scancel``)
  is reported once and its run marked ``failed`` instead of being waited for forever.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

from .callbacks import outcome, write_outcome
from .record import RECORD, now, read_record, write_json_atomic

log = logging.getLogger(__name__)
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
#: SLURM sends ``--signal`` up to 60 s early (its event resolution)
SIGNAL_SLACK_S = 60


def mark_failed(run_dir: Path, error: str) -> None:
    """Record ``failed`` with ``error`` in a run dir whose record is not ``completed``."""
    record = read_record(run_dir)
    if record is not None and record.get("status") == "completed":
        return
    record = dict(record or {"name": run_dir.name, "run_dir": str(run_dir)})
    record.update(status="failed", error=error, updated=now())
    write_json_atomic(run_dir / RECORD, record)
    write_outcome(run_dir.parent, run_dir.name, {"status": "failed", "reason": error})  # the summary


def seconds_left(job_id: str) -> float | None:
    """Time left before the job's limit, from ``squeue`` (None when unknown or unlimited)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%L"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
        days, _, hms = out.rpartition("-")
        parts = [int(p) for p in hms.split(":")]
    except (OSError, subprocess.SubprocessError, ValueError):
        return None  # UNLIMITED, or squeue failed
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


class SlurmLauncher(BaseSubmititLauncher):
    _EXECUTOR = "slurm"

    # ----------------------------------------------------------------- in the SLURM job
    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        import submitit

        env = submitit.JobEnvironment()
        # submitit's handlers requeue on SIGUSR2 only and ignore the rest; ours only note the signal
        # outside training (the trainer catches it during training, then we decide below)
        for name in SIGNALS:
            signal.signal(getattr(signal, name), _note_signal)
        ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        from .train import Interrupted

        error = ret._return_value if ret.status == JobStatus.FAILED else None
        if not isinstance(error, Interrupted):
            return ret
        run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
        signum = signal.Signals(error.signum)
        if env.global_rank != 0:  # several tasks per job: task 0 decides for the job
            raise SystemExit(1)
        if signum == signal.SIGTERM:  # scontrol requeue / preemption: SLURM requeues the job itself
            print(f"[bench] {run_dir.name}: {signum.name}; exiting (SLURM requeues the job)", file=sys.stderr)
            raise SystemExit(1)  # no result: the launcher waits for the requeued job
        delayed = submitit.helpers.DelayedSubmission.load(env.paths.submitted_pickle)
        left = seconds_left(env.job_id)  # None: unlimited or unknown, not a timeout
        timed_out = left is not None and left <= int(self.params.get("signal_delay_s", 0)) + SIGNAL_SLACK_S
        countdown = delayed._timeout_countdown - int(timed_out)
        if countdown < 0:
            max_num = self.params.get("max_num_timeout", 0)
            mark_failed(
                run_dir,
                f"requeues exhausted: {signum.name} near the time limit at step {error.step} after "
                f"max_num_timeout={max_num} requeues; the checkpoint is kept: re-launch with "
                "retry_failed=true and a larger hydra.launcher.timeout_min or max_num_timeout to resume",
            )
            print(f"[bench] {run_dir.name}: requeues exhausted; marked failed", file=sys.stderr)
            return JobReturn(
                overrides=ret.overrides,
                cfg=ret.cfg,
                hydra_cfg=ret.hydra_cfg,
                working_dir=ret.working_dir,
                task_name=ret.task_name,
                status=JobStatus.COMPLETED,
                _return_value=None,
            )
        resubmission = self.checkpoint(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        resubmission.set_timeout(delayed._timeout_min, countdown)
        tmp = env.paths.submitted_pickle.with_suffix(".requeue.pkl")
        resubmission.dump(tmp)
        os.replace(tmp, env.paths.submitted_pickle)
        case = "time limit" if timed_out else "preemption"
        print(f"[bench] {run_dir.name}: {signum.name} ({case}); requeueing {env.job_id}", file=sys.stderr)
        subprocess.run(["scontrol", "requeue", env.job_id], check=True, timeout=60)
        raise SystemExit(1)

    # ----------------------------------------------------------------- on the submitting host
    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        returns: dict[int, JobReturn] = {}
        to_submit: list[tuple[int, list[str], str]] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            skipped, run_name = self._skip(list(overrides), idx)
            if skipped is not None:
                returns[idx] = skipped
            else:
                to_submit.append((idx, list(overrides), run_name))
        if to_submit:
            executor = self._executor(submitit)
            params = [
                (o, "hydra.sweep.dir", i, f"job_id_for_{i}", Singleton.get_state()) for i, o, _ in to_submit
            ]
            for i, o, _ in to_submit:
                log.info(f"\t#{i} : {' '.join(filter_overrides(o))}")
            jobs = executor.map_array(self, *zip(*params, strict=True))
            watcher = queue_watcher()
            sweep = str(self.config.name)
            for job, (_, _, run_name) in zip(jobs, to_submit, strict=True):
                job.watcher = watcher
                _rename(job.job_id, f"{sweep}/{run_name}")
            for job, (i, overrides, run_name) in zip(jobs, to_submit, strict=True):
                returns[i] = self._result(job, overrides, run_name)
        return [returns[i] for i in sorted(returns)]

    def _executor(self, submitit):
        """Hydra's plugin: executor and parameters from the launcher config."""
        params = dict(self.params)
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout", 0),
        )
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        return executor

    def _skip(self, overrides: list[str], idx: int) -> tuple[JobReturn | None, str]:
        """A finished JobReturn when the run is not to be submitted (``bench.run.skip_reason``)."""
        from .run import skip_reason

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        previous_hydra = HydraConfig.instance().cfg
        try:
            HydraConfig.instance().set_config(cfg)
            run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        finally:
            HydraConfig.instance().cfg = previous_hydra
        record = read_record(run_dir)
        message = skip_reason(cfg, record, run_dir)
        if message is None:
            return None, run_dir.name
        print(f"[bench] {run_dir.name}: {message}")
        write_outcome(run_dir.parent, run_dir.name, outcome(record, now()))  # counted by the summary
        return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=record), run_dir.name

    def _result(self, job, overrides: list[str], run_name: str) -> JobReturn:
        """The job's JobReturn; a job gone without a result is reported and its run marked failed."""
        try:
            return job.results()[0]
        except Exception:  # UncompletedJobError/FailedJobError: no result pickle
            state = job.watcher.get_state(job.job_id, mode="cache")
            error = (
                f"SLURM job {job.job_id} ended ({state}) without a result (see {job.paths.stderr}); "
                "re-launch with retry_failed=true to resume it"
            )
            log.warning(f"{run_name}: {error}")
            run_dir = Path(str(self.config.hydra.sweep.dir)) / run_name
            if run_dir.exists():
                mark_failed(run_dir, error)
            return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)


def _note_signal(signum: int, frame: Any) -> None:
    """Outside training a signal is only logged: the run goes on (to its end, or SLURM's SIGKILL)."""
    print(f"[bench] received {signal.Signals(signum).name}", file=sys.stderr)


def _rename(job_id: str, name: str) -> None:
    result = subprocess.run(
        ["scontrol", "update", f"JobId={job_id}", f"JobName={name}"], capture_output=True, text=True
    )
    if result.returncode:
        log.debug(f"could not rename job {job_id}: {result.stderr.strip()}")


def _squeue_states(ids: set[str]) -> dict[str, str] | None:
    """``{job id: state}`` of the jobs (and array tasks) of ``ids`` still known to slurmctld."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i|%T", "--me"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    states = {}
    for line in out.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid.split("_")[0] in ids:
            states[jid] = state
    return states


#: squeue/sacct states after which a job never runs again
ENDED = (
    "GONE",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
)


def queue_watcher(delay_s: int = 30):
    """submitit's state watcher, falling back to ``squeue`` (one warning) when ``sacct`` fails.

    A job that ``squeue`` no longer lists is ``GONE`` (done), so ``results()`` reads its result or
    reports its absence after a bounded wait, instead of polling an UNKNOWN state forever. (Built on
    first use: this module is imported by Hydra's plugin scan at every start, submitit is not.)"""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class QueueWatcher(SlurmInfoWatcher):
        def __init__(self, delay_s: int) -> None:
            super().__init__(delay_s=delay_s)
            self.use_sacct: bool | None = None

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            return self.get_state(job_id, mode=mode).upper().startswith(ENDED)

        def update(self) -> None:
            if self.use_sacct is None:
                probe = _run_quiet(["sacct", "-n", "-X", "-j", "1"])
                self.use_sacct = probe == 0
                if not self.use_sacct:
                    log.warning(
                        "sacct does not work on this cluster (no accounting?): following jobs with squeue"
                    )
            if self.use_sacct:
                return super().update()
            pending = self._registered - self._finished
            if not pending:
                return
            self._num_calls += 1
            states = _squeue_states({j.split("_")[0] for j in pending})
            self._last_status_check = time.time()
            if states is None:
                return  # slurmctld unreachable for now: keep the last states, try again later
            for jid in pending:
                self._info_dict[jid] = {"JobID": jid, "State": states.get(jid, "GONE")}
                if self.is_done(jid, mode="cache"):
                    self._finished.add(jid)

    return QueueWatcher(delay_s)


def _run_quiet(cmd: list[str]) -> int:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=60).returncode
    except (OSError, subprocess.SubprocessError):
        return 1
