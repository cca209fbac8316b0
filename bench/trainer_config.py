"""The typed trainer config: every key of the ``trainer`` group, with its type.

``conf/trainer/default.yaml`` is the one home of each trainer default; the code has no fallbacks.
:class:`TrainerConfig` types a complete trainer config (one field per key, none with a default):
:meth:`TrainerConfig.from_mapping` refuses a missing or an unknown key, naming it (``bench.config_check``
reports the same :func:`unknown_keys` with the value errors of its rules, one per key), and
:func:`shipped` gives the shipped defaults with some keys changed, for code that builds a
:class:`bench.train.Trainer` without Hydra.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

#: the shipped trainer config, home of every default
DEFAULTS = Path(__file__).resolve().parent.parent / "conf" / "trainer" / "default.yaml"
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("poly", "onecycle", "constant")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str  # one of OPTIMIZERS
    lr: float
    weight_decay: float
    momentum: float  # sgd only
    loss_lr: float | None  # learning rate of loss parameters (e.g. t_loss's ν); None: lr


@dataclass(frozen=True)
class SchedulerConfig:
    name: str  # one of SCHEDULERS
    power: float  # poly
    warmup_steps: int


@dataclass(frozen=True)
class TrainerConfig:
    device: str
    max_steps: int
    batch_size: int
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    amp: bool
    channels_last: bool
    compile: bool
    grad_clip: float | None
    log_every: int
    eval_every: int
    ckpt_every: int
    monitor: str
    deterministic: bool
    progress_bar: bool
    eval_workers: int | str

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> TrainerConfig:
        """The typed config of a complete, resolved trainer mapping (e.g. ``cfg.trainer`` as a
        container). ValueError naming every missing and unknown key."""
        errors = [
            f"trainer.{key} is missing; add it ({DEFAULTS.relative_to(DEFAULTS.parents[2])} has every key)"
            for key in keys()
            if not _has(cfg, key)
        ]
        errors += unknown_keys(cfg)
        if errors:
            raise ValueError("; ".join(errors))
        return cls(**{k: NESTED[k](**v) if k in NESTED else v for k, v in cfg.items()})


#: the trainer keys that hold a config of their own
NESTED: dict[str, type] = {"optimizer": OptimizerConfig, "scheduler": SchedulerConfig}


def keys() -> list[str]:
    """Every trainer key, dotted (``optimizer.lr``), in the order of :class:`TrainerConfig`."""
    out = []
    for f in dataclasses.fields(TrainerConfig):
        nested = NESTED.get(f.name)
        out += [f"{f.name}.{g.name}" for g in dataclasses.fields(nested)] if nested else [f.name]
    return out


def unknown_keys(cfg: Mapping[str, Any]) -> list[str]:
    """One line per key of the trainer mapping ``cfg`` that :class:`TrainerConfig` does not have."""
    errors = _unknown(cfg, TrainerConfig, "trainer.")
    for name, kind in NESTED.items():
        if isinstance(cfg.get(name), Mapping):
            errors += _unknown(cfg[name], kind, f"trainer.{name}.")
    return errors


def _unknown(cfg: Mapping[str, Any], kind: type, prefix: str) -> list[str]:
    known = [f.name for f in dataclasses.fields(kind)]
    return [
        f"{prefix}{k}={v!r}: unknown key; remove it or use one of: {', '.join(known)}"
        for k, v in cfg.items()
        if k not in known
    ]


def _has(cfg: Mapping[str, Any], dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(cfg, Mapping) or part not in cfg:
            return False
        cfg = cfg[part]
    return True


def shipped(**changes: Any) -> TrainerConfig:
    """The shipped trainer config (:data:`DEFAULTS`) with ``changes`` merged in (a nested mapping
    such as ``optimizer={"lr": 0.1}`` changes those keys alone). ``batch_size`` is needed: the
    shipped one is the data config's."""
    merged = OmegaConf.merge(OmegaConf.load(DEFAULTS), changes)
    if OmegaConf.is_interpolation(merged, "batch_size"):
        raise ValueError(
            "batch_size is not set: the shipped trainer config takes it from data.batch_size; "
            "pass batch_size=N"
        )
    return TrainerConfig.from_mapping(OmegaConf.to_container(merged, resolve=True))
