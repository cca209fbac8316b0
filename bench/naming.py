"""Run directories named by their overrides, so a re-launched sweep finds its own runs.

``run_name(["+loss=focal", "+data=synthetic", "seed=0"])`` → ``"data=synthetic,loss=focal,seed=0"``:
the main choices first (experiment, data, model, loss, seed), then the other overrides sorted;
without ``+``/``~``/``++`` prefixes and keys that do not change the result (logging, paths,
resume/force flags); ``/`` replaced by ``-``. Long names keep a readable prefix plus a hash.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

from omegaconf import OmegaConf

#: override keys (and key prefixes before a dot) that do not change what a run computes
NON_IDENTITY = (
    "name",
    "tags",
    "logger",
    "paths",
    "resume",
    "force",
    "retry_failed",
    "hydra",
    "trainer.progress_bar",
)
MAX_LEN = 120
FIRST = ("experiment", "data", "model", "loss", "seed")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def run_name(overrides: Iterable[str]) -> str:
    """Deterministic directory name of a run from its Hydra task overrides."""
    kept = sorted(
        (
            o.lstrip("+~")
            for o in overrides
            if not any(_key(o) == k or _key(o).startswith(k + ".") for k in NON_IDENTITY)
        ),
        key=lambda o: (FIRST.index(_key(o)) if _key(o) in FIRST else len(FIRST), o),
    )
    name = ",".join(kept) or "default"
    name = re.sub(r"[/\\\s]+", "-", name)
    name = re.sub(r"[^\w.,=+\-\[\]:@]", "_", name)
    if len(name) > MAX_LEN:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_LEN - 11]}~{digest}"
    return name


def loss_sweep(selector: str = "all") -> str:
    """``${losses:survey}``: the survey's losses as a sweep (``a,b,c``); ``${losses:extra}`` the
    others, ``${losses:all}`` every registered loss, ``${losses:<category>}`` one category."""
    import losses

    if selector in ("all", "survey", "extra"):
        names = losses.list_losses(survey={"all": None, "survey": True, "extra": False}[selector])
    elif selector in losses.CATEGORIES:
        names = losses.list_losses(category=selector)
    else:
        categories = ", ".join(losses.CATEGORIES)
        raise ValueError(f"${{losses:{selector}}}: choose all, survey, extra or a category ({categories})")
    return ",".join(names)


def register_resolvers() -> None:
    """Register ``${run_name:...}`` (run/sweep dirs), ``${cwd:}`` (the launch folder) and
    ``${losses:...}`` (loss lists for sweeps, see :func:`loss_sweep`); idempotent."""
    if not OmegaConf.has_resolver("losses"):
        OmegaConf.register_new_resolver("losses", loss_sweep)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", lambda overrides: run_name(list(overrides)))
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
