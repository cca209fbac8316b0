"""Run directories named by their overrides, so a re-launched sweep finds its own runs.

``run_name(["+loss=focal", "+data=synthetic", "seed=0"])`` → ``"data=synthetic,loss=focal,seed=0"``:
the main choices first (experiment, data, model, loss, seed), then the other overrides sorted;
without ``+``/``~``/``++`` prefixes and keys that do not change the result
(:data:`bench.identity.NON_IDENTITY`); values of secret-looking keys masked. Names are unique per
set of overrides: when a name had to be altered to be a safe folder name (separators such as the
``/`` of a path, spaces, other characters) or is longer than :data:`MAX_LEN`, a short hash of the
overrides is appended (``data.root=-a-b~3f9c2e1d``), so ``data.root=/a/b`` and ``data.root=/a-b``
never share a directory. :func:`safe_component` makes ``name`` (the group folder) safe likewise.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

from omegaconf import OmegaConf

from .identity import MASK, is_secret, non_identity

MAX_LEN = 120
HASH_LEN = 8
FIRST = ("experiment", "data", "model", "loss", "seed")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def safe_component(text: str) -> str:
    """``text`` as one folder name: no separators, no ``..``, not hidden, only plain characters."""
    text = re.sub(r"[/\\\s]+", "-", str(text))
    text = re.sub(r"[^\w.,=+\-\[\]:@~]", "_", text)
    text = re.sub(r"\.{2,}", "_", text)
    return re.sub(r"^\.", "_", text) or "_"


def _masked(override: str) -> str:
    key, sep, _ = override.partition("=")
    return f"{key}={MASK}" if sep and is_secret(key) else override


def run_name(overrides: Iterable[str]) -> str:
    """Deterministic, unique, filesystem-safe directory name of a run from its task overrides."""
    kept = sorted(
        (_masked(o.lstrip("+~")) for o in overrides if not non_identity(_key(o))),
        key=lambda o: (FIRST.index(_key(o)) if _key(o) in FIRST else len(FIRST), o),
    )
    raw = ",".join(kept) or "default"
    name = safe_component(raw)
    if name != raw or len(name) > MAX_LEN:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:HASH_LEN]
        name = f"{name[: MAX_LEN - HASH_LEN - 1]}~{digest}"
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
    """Register ``${run_name:...}`` (run/sweep dirs), ``${safe:...}`` (a safe folder name),
    ``${cwd:}`` (the launch folder) and ``${losses:...}`` (loss lists for sweeps, see
    :func:`loss_sweep`); idempotent."""
    if not OmegaConf.has_resolver("losses"):
        OmegaConf.register_new_resolver("losses", loss_sweep)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", lambda overrides: run_name(list(overrides)))
    if not OmegaConf.has_resolver("safe"):
        OmegaConf.register_new_resolver("safe", lambda text: safe_component(str(text)))
    if not OmegaConf.has_resolver("cwd"):
        OmegaConf.register_new_resolver("cwd", os.getcwd)
