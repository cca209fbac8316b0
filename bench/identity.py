"""Run identity: a run *is* its resolved config, minus the keys that cannot change its result.

:func:`fingerprint` hashes the identity part of a resolved config (secrets masked, see :func:`mask`)
into a short hex string. It is stored in ``record.json`` and in each checkpoint; a re-launch in an
existing run directory compares fingerprints before it resumes, skips or re-scores anything
(``bench.run``), and the aggregator groups runs by the fingerprint without ``seed``.

:data:`NON_IDENTITY` lists the keys left out (a key also covers everything below it): where the
outputs go, how progress is shown and logged, how a re-launch behaves and how many worker
processes load data or score cases. Everything else — data (including its root folder), model,
loss, trainer, seed, device — is identity: change it and you have another experiment.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from typing import Any

#: dotted config keys that cannot change a run's result (each covers the keys below it)
NON_IDENTITY = (
    "name",  # the group folder of the outputs (and the W&B group)
    "tags",  # free-form labels
    "logger",  # W&B or none: what is mirrored, not what is computed
    "paths.root",  # the launch folder (data roots derived from it are resolved into data.root)
    "paths.output_dir",  # where run directories are written
    "resume",  # re-launch behaviour
    "force",
    "retry_failed",
    "hydra",
    "trainer.progress_bar",
    "trainer.ckpt_every",  # how often state is saved; the resumed run is exactly the same
    "trainer.eval_workers",  # processes scoring cases; same numbers
    "data.num_workers",  # loader processes; the data order and augmentations do not depend on them
)
#: parts of key names whose values are secrets: masked in records, names, W&B and logs
SECRET_PARTS = ("key", "token", "secret", "password")
MASK = "***"
HASH_LEN = 12


def is_secret(key: str) -> bool:
    """True for a key (or dotted key / override) whose value looks like a credential."""
    last = str(key).lstrip("+~").rsplit(".", 1)[-1].lower()
    return any(part in last for part in SECRET_PARTS)


#: values that hold no secret (``exclude_keys: []`` in Hydra's own config is not a credential)
EMPTY = (None, "", [], {})
EMPTY_TEXT = ("[]", "{}", "''", '""', "null", "None", "~")


def mask(obj: Any) -> Any:
    """Copy of a config (dicts/lists) with the values of secret-looking keys replaced by ``***``."""
    if isinstance(obj, dict):
        return {k: MASK if is_secret(k) and obj[k] not in EMPTY else mask(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [mask(v) for v in obj]
    return obj


def mask_text(text: str) -> str:
    """``text`` with the values of ``key=value`` / ``key: value`` pairs of secret-looking keys masked."""
    return _SECRET_PAIR.sub(lambda m: m[0] if m[2] in EMPTY_TEXT else m[1] + MASK, text)


def mask_yaml(text: str) -> str:
    """A YAML document with secret values masked (:func:`mask`, and :func:`mask_text` inside strings
    such as Hydra's saved overrides), written back as valid YAML; ``text`` itself when nothing is."""
    import yaml

    def deep(obj: Any) -> Any:
        if isinstance(obj, str):
            return mask_text(obj)
        if isinstance(obj, dict):
            return {k: deep(v) for k, v in mask(obj).items()}
        if isinstance(obj, list):
            return [deep(v) for v in obj]
        return obj

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:  # not plain YAML: mask pairs in the text
        return mask_text(text)
    masked = deep(data)
    return text if masked == data else yaml.safe_dump(masked, sort_keys=False, allow_unicode=True)


_SECRET_PAIR = re.compile(
    r"((?<![\w.])[+~]*[\w.]*(?:" + "|".join(SECRET_PARTS) + r")\w*['\"]?\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|\[[^\]]*\]|\{[^}]*\}|[^\s,'\"}\]]+)",
    re.IGNORECASE,
)


def non_identity(key: str, excluded: Iterable[str] = NON_IDENTITY) -> bool:
    """True when dotted ``key`` is (or lies below) one of ``excluded``."""
    return any(key == k or key.startswith(k + ".") for k in excluded)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": 1, "c": [1, 2]}`` (lists stay values)."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj} if prefix else {}


def _plain(obj: Any) -> Any:
    """JSON-stable copy: tuples → lists, non-finite floats → None, keys → str (as records store)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def identity(config: dict[str, Any], excluded: Iterable[str] = NON_IDENTITY) -> dict[str, Any]:
    """The flat ``{dotted key: value}`` that defines the experiment (secrets masked)."""
    excluded = tuple(excluded)
    flat = flatten(_plain(mask(config)))
    return {k: v for k, v in sorted(flat.items()) if not non_identity(k, excluded)}


def fingerprint(config: dict[str, Any], *, without: Iterable[str] = ()) -> str:
    """Short hash of :func:`identity` (``without`` drops further keys, e.g. ``("seed",)``).

    ``config`` is the resolved config as a plain dict — or the ``config`` of a record, which gives
    the same fingerprint."""
    ident = identity(config, (*NON_IDENTITY, *without))
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LEN]


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["key: old → new", ...]`` for the identity keys that differ between two configs."""
    a, b = identity(old), identity(new)
    missing = "(absent)"
    return [
        f"{k}: {_show(a[k]) if k in a else missing} → {_show(b[k]) if k in b else missing}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]
