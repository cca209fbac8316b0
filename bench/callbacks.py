"""Hydra callbacks: the end-of-sweep summary that makes failed jobs visible."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .record import RECORD


class SweepSummary(Callback):
    """After a multirun, list the runs it touched by status; exit 1 if any failed.

    Jobs never stop a sweep: a failing job is recorded as ``failed`` (with the error) and the next job
    runs. The summary reads the records below the sweep dir written since the sweep started, so it
    works the same with the local and the submitit launchers.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 1

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        started = getattr(self, "started", 0.0)
        runs: dict[str, list[tuple[str, str | None]]] = {}
        for path in sorted(Path(config.hydra.sweep.dir).rglob(RECORD)):
            if path.stat().st_mtime < started:
                continue  # skipped: completed in an earlier sweep
            try:
                rec = json.loads(path.read_text())
            except json.JSONDecodeError:
                rec = {"status": "unreadable"}
            runs.setdefault(rec.get("status", "?"), []).append((path.parent.name, rec.get("error")))
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(runs.items())) or "no runs written"
        print(f"[bench] sweep {config.hydra.sweep.dir}: {counts}", file=sys.stderr)
        for name, error in runs.get("failed", []):
            print(f"[bench]   failed: {name}: {error}", file=sys.stderr)
        if runs.get("failed"):
            raise SystemExit(1)
