"""The run record: ``record.json`` in each run directory, always written atomically.

Fields: ``status`` (running | completed | failed | interrupted), ``error``, ``fingerprint`` (the
run's identity, ``bench.identity``), ``config`` (resolved, secrets masked),
``loss``, ``data``, ``eval_data``, ``model``, ``seed``, ``metrics`` (see ``bench.protocols.summarize``;
the first of ``data.protocol`` when it lists several, the others in ``more_metrics``),
``history`` (training curve and periodic evaluations), ``timings`` (seconds), ``versions``,
``commit``, ``created``/``updated`` (ISO-8601 UTC). NaN is stored as ``null``.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
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
