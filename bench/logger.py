"""Experiment loggers: ``none`` and Weights & Biases (``logger=wandb``).

W&B mode follows ``WANDB_MODE``; when it is unset and no credentials are found (``WANDB_API_KEY``
or a netrc entry), the run is logged offline with a one-line notice instead of a prompt. A logging
outage never kills a run: before an online init the server (``WANDB_BASE_URL``) is probed for at most
``logger.init_timeout`` seconds (30 by default); when it does not answer, or the init itself fails or
exceeds that timeout, the run continues offline after a one-line notice (sync it later with
``wandb sync``). The W&B run id is derived from the run directory, so a resumed run continues the
same W&B run.

Keys (one definition, :mod:`bench.results.schema`, which the W&B loader reads back): the first
protocol's metrics as ``test/<score>``, ``test/<score>/<class>``, ``test/subsets/<subset>/<score>``
and the table ``test/per_class``; every further protocol's (a run scored under several) the same
under ``test/<protocol>/``.
"""

from __future__ import annotations

import hashlib
import netrc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import urlopen

from .results.schema import PER_CLASS_TABLE, SCORES, wandb_prefix, wandb_summary

LOGGERS = ("none", "wandb")
DEFAULT_BASE_URL = "https://api.wandb.ai"


class NullLogger:
    """Logs nothing remotely (the run record is written regardless)."""

    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def finish(self, metrics: dict[str, Any] | None, more: Sequence[dict[str, Any]] = ()) -> None:
        pass


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None  # NETRC as in wandb
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbLogger:
    """Config, training curves, periodic and final metrics (with a per-class table) to W&B."""

    def __init__(
        self,
        *,
        project: str,
        entity: str | None,
        group: str | None,
        job_type: str,
        tags: list[str],
        run_dir: Path,
        name: str,
        config: dict[str, Any],
        init_timeout: float = 30.0,
        created: str = "",
    ) -> None:
        import wandb

        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE")
        if mode is None and not _has_credentials():
            print(
                "wandb: no credentials found, logging offline (sync later with `wandb sync`)", file=sys.stderr
            )
            mode = "offline"
        kwargs = dict(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            tags=list(tags or []),
            name=name,
            id=hashlib.sha1(f"{Path(run_dir).resolve()}|{created}".encode()).hexdigest()[:16],
            resume="allow",
            dir=str(run_dir),
            config=config,
        )
        if mode in (None, "online"):
            down = unreachable(os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL), init_timeout)
            if down:
                print(f"wandb: {down}; logging offline (sync later with `wandb sync`)", file=sys.stderr)
                mode = "offline"
        if mode in (None, "online"):
            kwargs["settings"] = wandb.Settings(init_timeout=float(init_timeout))
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as e:  # init timeout, bad key...: keep the run alive
            if mode in ("offline", "disabled"):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            why = f"{type(e).__name__}: {first}"
            print(f"wandb: init failed ({why}); logging offline instead", file=sys.stderr)
            wandb.teardown()  # the service still holds the run id: an offline init would say "in use"
            kwargs.pop("settings", None)
            self.run = wandb.init(mode="offline", **kwargs)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, metrics: dict[str, Any] | None, more: Sequence[dict[str, Any]] = ()) -> None:
        """Send the final metrics blocks and close the run: ``metrics`` (the record's ``metrics``;
        None when the run failed) and ``more`` (``more_metrics``: one block per further protocol),
        under the keys of :func:`bench.results.schema.wandb_summary`."""
        blocks = [(wandb_prefix(), metrics)] if metrics else []
        blocks += [(wandb_prefix(m["protocol"]), m) for m in more]
        for prefix, block in blocks:
            self.run.summary.update(wandb_summary(block, prefix))
            keys = [k for k in block["mean"] if k in SCORES]  # dsc, iou, hd95 (+ nsd, assd | biou)
            rows = [[name, *(m.get(key) for key in keys)] for name, m in block["per_class"].items()]
            table = self.wandb.Table(columns=["class", *keys], data=rows)
            self.run.log({f"{prefix}/{PER_CLASS_TABLE}": table})
        self.run.finish()


def unreachable(url: str, timeout: float) -> str | None:
    """Why the W&B server at ``url`` cannot be used (no answer within ``timeout`` s), or None.

    Any HTTP answer, even an error status, counts as reachable (``wandb.init`` then decides)."""
    try:
        with urlopen(url, timeout=timeout):
            return None
    except HTTPError:
        return None
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"server {url} unreachable within {timeout:g} s ({reason})"


def make_logger(cfg: dict[str, Any], *, run_dir: Path, name: str, config: dict[str, Any], created: str = ""):
    """The logger named by ``cfg['name']`` (``none`` | ``wandb``). ``created`` is the run's creation
    time: with the run directory it makes the W&B run id, so a resumed run continues its W&B run
    and a run started afresh (``force=true``) gets a new one."""
    kind = cfg.get("name", "none")
    if kind == "none":
        return NullLogger()
    if kind == "wandb":
        return WandbLogger(
            project=cfg.get("project", "segloss-bench"),
            entity=cfg.get("entity"),
            group=cfg.get("group"),
            job_type=cfg.get("job_type", "train"),
            tags=cfg.get("tags") or [],
            run_dir=run_dir,
            name=name,
            config=config,
            init_timeout=float(cfg.get("init_timeout", 30.0)),
            created=created,
        )
    raise ValueError(f"logger.name={kind!r} is not one of: {', '.join(LOGGERS)}")
