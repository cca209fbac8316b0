"""Hydra callbacks: the end-of-sweep summary that makes every job that did not complete visible."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .record import write_json_atomic

JOBS = ".jobs"  # <sweep dir>/.jobs/<run name>.json: each job's outcome, written by the job itself
OK = ("completed",)


def write_outcome(sweep_dir: Path, run_name: str, outcome: dict[str, Any]) -> None:
    """Record a job's outcome (``status``, ``reason``) for :class:`SweepSummary`."""
    folder = Path(sweep_dir) / JOBS
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / f"{run_name}.json", {"run": run_name, **outcome})


def outcome(record: dict[str, Any], started: str) -> dict[str, Any]:
    """What a sweep job reports to the sweep summary (``bench.callbacks``)."""
    earlier = str(record.get("updated", "")) < started
    reason = record.get("error")
    if earlier and record.get("status") == "failed":
        reason = f"{reason} (failed in an earlier launch; retry_failed=true re-runs it)"
    return {"status": record.get("status") or "no record", "reason": reason, "skipped": earlier}


def read_outcomes(sweep_dir: Path, since: float) -> list[dict[str, Any]]:
    """The outcomes written since ``since`` (epoch seconds), sorted by run name."""
    out = []
    for path in sorted((Path(sweep_dir) / JOBS).glob("*.json")):
        if path.stat().st_mtime < since:
            continue  # a job of an earlier sweep into the same folder
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            out.append({"run": path.stem, "status": "unreadable", "reason": f"{path} is not valid JSON"})
    return out


class SweepSummary(Callback):
    """After a multirun, count the jobs by status and list each one that did not complete.

    Jobs never stop a sweep (a failing job is recorded as ``failed`` and the next job runs; only a
    signal stops a local sweep). Each job writes its outcome to ``<sweep dir>/.jobs/`` — completed,
    failed (now or in an earlier launch), interrupted, refused (another config in its run
    directory), locked (another process writes it) — so the summary works the same with the local
    and the submitit launchers. Exit status 1 when any job did not complete, or none reported.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = read_outcomes(sweep_dir, getattr(self, "started", 0.0))
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no job reported (no runs written)"
        print(f"[bench] sweep {sweep_dir}: {text}", file=sys.stderr)
        bad = [job for job in jobs if job["status"] not in OK]
        for job in bad:
            print(f"[bench]   {job['status']}: {job['run']}: {job.get('reason')}", file=sys.stderr)
        if bad or not jobs:
            raise SystemExit(1)
