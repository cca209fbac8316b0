"""The run record: ``record.json`` in each run directory, always written atomically.

:class:`RunRecord` owns its lifecycle: created and written as ``running`` (:meth:`RunRecord.start`),
then ended once as ``completed`` (metrics, history, timings), ``failed`` (error, traceback, the step
of a NaN loss) or ``interrupted`` (why; resumable) — each step written at once.

Fields: ``status`` (running | completed | failed | interrupted), ``error``, ``fingerprint`` (the
run's identity, ``bench.identity``), ``config`` (resolved, secrets masked),
``loss``, ``data``, ``eval_data``, ``model``, ``seed``, ``metrics`` (see ``bench.protocols.summarize``;
the first of ``data.protocol`` when it lists several, the others in ``more_metrics``),
``history`` (training curve and periodic evaluations), ``timings`` (seconds), ``versions``,
``commit``, ``created``/``updated`` (ISO-8601 UTC), ``run_dir``; a failed run adds ``traceback`` and,
for a NaN loss, ``failed_step``. NaN is stored as ``null``.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
import traceback
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .identity import mask

RECORD = "record.json"
PACKAGES = (
    "segloss-bench",
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "numpy",
    "hydra-core",
    "wandb",
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf → None, numpy/torch scalars → Python numbers, tuples → lists."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (NaN/inf as null) to ``path`` atomically (``bench.atomic``)."""
    atomic_write(path, lambda f: f.write(json.dumps(_plain(obj), indent=1, allow_nan=False).encode()))


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of ``run_dir``, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(root: str | Path) -> str | None:
    """``HEAD`` of the repository at ``root`` (``+dirty`` when the tree has changes), else None."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def redact(obj: Any) -> Any:
    """Copy of a config dict with the values of secret-looking keys (api_key, token…) masked."""
    return mask(obj)


class RunRecord:
    """The record of one run, written to ``record.json`` at each step of its lifecycle:
    :meth:`start` (``running``) → :meth:`complete`, :meth:`fail` or :meth:`interrupt`, once.

    ``fields`` is the record as written. ``write=False`` keeps it in memory alone (the ranks other
    than 0 under torchrun). ``timings`` are measured from :meth:`start`."""

    def __init__(self, run_dir: str | Path, fields: dict[str, Any], *, write: bool = True) -> None:
        self.path, self.fields, self.write = Path(run_dir) / RECORD, fields, write
        self._t0 = time.perf_counter()

    @classmethod
    def start(
        cls,
        run_dir: str | Path,
        *,
        fingerprint: str,
        name: str,
        loss: str,
        data: str,
        eval_data: str,
        model: str,
        seed: int,
        config: dict[str, Any],
        commit: str | None,
        previous: dict[str, Any] | None = None,
        write: bool = True,
    ) -> RunRecord:
        """A ``running`` record, written. ``previous``: the record of an interrupted run of the same
        config, resumed (its ``created`` time is kept)."""
        record = cls(
            run_dir,
            {
                "status": "running",
                "fingerprint": fingerprint,
                "name": name,
                "loss": loss,
                "data": data,
                "model": model,
                "seed": seed,
                "config": config,
                "metrics": None,
                "history": None,
                "timings": {},
                "versions": versions(),
                "commit": commit,
                "created": (previous or {}).get("created", now()),
                "updated": now(),
                "run_dir": str(run_dir),
                "eval_data": eval_data,
            },
            write=write,
        )
        record._save()
        record._t0 = time.perf_counter()
        return record

    @property
    def status(self) -> str:
        return self.fields["status"]

    @property
    def created(self) -> str:
        return self.fields["created"]

    def complete(
        self,
        metrics: list[dict[str, Any]],
        history: dict[str, Any],
        *,
        train_s: float,
        eval_s: float,
        steps: int,
    ) -> None:
        """``metrics``: one block per protocol of ``data.protocol``; the first is ``metrics``, the
        others ``more_metrics``."""
        first, *more = metrics
        self._end(
            "completed",
            metrics=first,
            **({"more_metrics": more} if more else {}),
            history=history,
            timings={"train_s": train_s, "eval_s": eval_s, "total_s": self._elapsed(), "steps": steps},
        )

    def fail(self, error: BaseException, failed_step: int | None = None) -> None:
        """The error with its traceback; ``failed_step``: the first step of a NaN/inf loss."""
        self._end(
            "failed",
            error=f"{type(error).__name__}: {error}",
            traceback="".join(traceback.format_exception(error)),
            **({"failed_step": failed_step} if failed_step is not None else {}),
            timings={"total_s": self._elapsed()},
        )

    def interrupt(self, reason: str) -> None:
        """Stopped by a signal (resumable from the last checkpoint): ``reason`` says which."""
        self._end("interrupted", error=reason, timings={"total_s": self._elapsed()})

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _end(self, status: str, **fields: Any) -> None:
        if self.status != "running":
            raise RuntimeError(f"{self.path}: a {self.status} run cannot become {status}")
        self.fields.update(status=status, **fields)
        self.fields["updated"] = now()
        self._save()

    def _save(self) -> None:
        if self.write:
            write_json_atomic(self.path, self.fields)
