"""One validation pass over the composed config, before anything is built.

``check_config(cfg)`` returns one line per error — the key, the value and what is valid — for the
top-level keys, ``trainer``, ``data`` (and ``data.test_dataset``), ``model``, ``loss`` and ``logger``:
types (``trainer.max_steps=abc``), ranges (steps, batch sizes ≥ 1, lr > 0, …) and choices
(monitor, protocol, optimizer, scheduler, device, dataset, loss, arch, encoder). The CLI prints them
and exits with code 2 (:func:`exit_on_errors`), before a record, a model or a dataset exists.

Keys a config does not hold are skipped unless marked required (every trainer key is); keys not
listed here are left to the code that reads them, except in ``trainer``, where a key that
``bench.trainer_config.TrainerConfig`` does not have is refused. :class:`OutputCheck` (a Hydra
callback) checks before Hydra writes anything that the output folder is writable and not full.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .trainer_config import OPTIMIZERS, SCHEDULERS, unknown_keys

#: mean metrics that can select ``best.pt`` (higher is better)
MONITORS = ("dsc", "iou")
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

# a rule returns None when the value is valid, else what would be valid
Rule = Callable[[Any], "str | None"]
ABSENT = object()  # no rule accepts it: ``rule(ABSENT)`` describes what the rule accepts


def describe(rule: Rule) -> str:
    return rule(ABSENT) or ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def integer(lo: int | None = None) -> Rule:
    want = "an integer" + (f" >= {lo}" if lo is not None else "")
    return lambda v: None if _is_int(v) and (lo is None or v >= lo) else want


def number(lo: float = 0.0, *, strict: bool = True, hi: float | None = None) -> Rule:
    want = f"a number {'>' if strict else '>='} {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")

    def rule(v: Any) -> str | None:
        ok = _is_number(v) and (v > lo if strict else v >= lo) and (hi is None or v <= hi)
        return None if ok else want

    return rule


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def choice(options: Callable[[], tuple[str, ...]] | tuple[str, ...]) -> Rule:
    def rule(v: Any) -> str | None:
        valid = options() if callable(options) else options
        return None if isinstance(v, str) and v in valid else "one of: " + ", ".join(valid)

    return rule


def optional(inner: Rule) -> Rule:
    def rule(v: Any) -> str | None:
        want = inner(v) if v is not None else None
        return None if want is None else f"null or {want}"

    return rule


def list_of(inner: Rule, *, nonempty: bool = False, length: int | None = None, single: bool = False) -> Rule:
    """A list of values valid for ``inner`` (``single``: one bare value is accepted too)."""

    def rule(v: Any) -> str | None:
        items = [v] if single and not isinstance(v, list) else v
        what = describe(inner)
        size = f"{length} " if length else ""
        want = f"{what}, or a list of them" if single else f"a list of {size}({what})"
        if not isinstance(items, list) or (nonempty and not items) or (length and len(items) != length):
            return want
        return None if all(inner(x) is None for x in items) else want

    return rule


def device(v: Any) -> str | None:
    return None if isinstance(v, str) and DEVICE.fullmatch(v) else "auto, cpu, cuda or cuda:N"


def workers(v: Any) -> str | None:
    return None if v == "auto" or (_is_int(v) and v >= 0) else "auto or an integer >= 0"


def mapping(v: Any) -> str | None:
    return None if isinstance(v, Mapping) else "a mapping {key: value}"


def _datasets() -> tuple[str, ...]:
    import datasets

    return tuple(datasets.list_datasets())


def _losses() -> tuple[str, ...]:
    import losses

    return tuple(losses.list_losses())


def _protocols() -> tuple[str, ...]:
    from .protocols import list_protocols

    return tuple(list_protocols())


def _archs() -> tuple[str, ...]:
    import segmentation_models_pytorch as smp

    return tuple(sorted(smp.MODEL_ARCHITECTURES_MAPPING))


def _encoders() -> tuple[str, ...]:
    import segmentation_models_pytorch as smp

    return tuple(sorted(smp.encoders.get_encoder_names()))


def _loggers() -> tuple[str, ...]:
    from .logger import LOGGERS

    return LOGGERS


pair = list_of(integer(1), length=2)

# key → (rule, required)
TOP: dict[str, tuple[Rule, bool]] = {
    "name": (text, True),
    "seed": (integer(0), True),
    "tags": (list_of(text), False),
    "resume": (boolean, True),
    "force": (boolean, True),
    "retry_failed": (boolean, True),
}
# every trainer key is required (conf/trainer/default.yaml holds them all); the keys are those of
# bench.trainer_config.TrainerConfig, whose unknown_keys() names any other
TRAINER: dict[str, tuple[Rule, bool]] = {
    "device": (device, True),
    "max_steps": (integer(1), True),
    "batch_size": (integer(1), True),
    "optimizer.name": (choice(OPTIMIZERS), True),
    "optimizer.lr": (number(0), True),
    "optimizer.weight_decay": (number(0, strict=False), True),
    "optimizer.momentum": (number(0, strict=False, hi=1), True),
    "optimizer.loss_lr": (optional(number(0)), True),
    "scheduler.name": (choice(SCHEDULERS), True),
    "scheduler.power": (number(0, strict=False), True),
    "scheduler.warmup_steps": (integer(0), True),
    "amp": (boolean, True),
    "channels_last": (boolean, True),
    "compile": (boolean, True),
    "grad_clip": (optional(number(0)), True),
    "log_every": (integer(1), True),
    "eval_every": (integer(0), True),
    "ckpt_every": (integer(0), True),
    "monitor": (choice(MONITORS), True),
    "deterministic": (boolean, True),
    "progress_bar": (boolean, True),
    "eval_workers": (workers, True),
}
DATA: dict[str, tuple[Rule, bool]] = {
    "name": (choice(_datasets), True),
    "root": (text, True),
    "num_classes": (integer(1), True),
    "in_channels": (integer(1), True),
    "protocol": (list_of(choice(_protocols), nonempty=True, single=True), True),
    "batch_size": (integer(1), True),
    "eval_batch_size": (integer(1), True),
    "num_workers": (integer(0), True),
    "train": (mapping, True),
    "test": (mapping, True),
    "resize": (optional(pair), False),
    "generator.train_cases": (integer(1), False),
    "generator.test_cases": (integer(1), False),
    "generator.depth": (integer(1), False),
    "generator.size": (integer(16), False),
    "generator.seed": (integer(0), False),
}
SPLIT: dict[str, tuple[Rule, bool]] = {
    "split": (text, True),
    "img_size": (integer(16), False),
    "crop_size": (pair, False),
    "resize": (optional(pair), False),
    "scale": (list_of(number(0), length=2), False),
}
TEST_DATASET: dict[str, tuple[Rule, bool]] = {
    "name": (choice(_datasets), True),
    "root": (text, True),
    "test": (mapping, True),
    "eval_batch_size": (integer(1), False),
}
MODEL: dict[str, tuple[Rule, bool]] = {
    "name": (text, True),
    "arch": (choice(_archs), True),
    "encoder_name": (choice(_encoders), True),
    "encoder_weights": (optional(text), True),
    "kwargs": (mapping, False),
}
LOSS: dict[str, tuple[Rule, bool]] = {"name": (choice(_losses), True), "params": (mapping, False)}
LOGGER: dict[str, tuple[Rule, bool]] = {"name": (choice(_loggers), True)}
WANDB: dict[str, tuple[Rule, bool]] = {
    "project": (text, True),
    "entity": (optional(text), False),
    "group": (optional(text), False),
    "job_type": (text, False),
    "tags": (list_of(text), False),
    "init_timeout": (number(0), False),
}


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return ABSENT
        tree = tree[part]
    return tree


def _apply(tree: Any, raw: Any, prefix: str, rules: dict[str, tuple[Rule, bool]]) -> list[str]:
    """Errors of ``tree`` (resolved) under ``rules``; ``raw`` (unresolved) names interpolated values."""
    errors = []
    for key, (rule, required) in rules.items():
        value = _get(tree, key)
        name = f"{prefix}{key}"
        if value is ABSENT:
            if required:
                errors.append(f"{name} is missing; expected {describe(rule)}")
            continue
        want = rule(value)
        if want is not None:
            source = _get(raw, key)
            origin = f" (from {source})" if isinstance(source, str) and "${" in source else ""
            errors.append(f"{name}={value!r}{origin}: expected {want}")
    return errors


def _splits(name: Any) -> tuple[str, ...] | None:
    import datasets

    return datasets.dataset_info(name).splits if name in _datasets() else None


def check_config(cfg: DictConfig | Mapping[str, Any]) -> list[str]:
    """Every error of ``cfg``, one line each (empty when the config is valid)."""
    raw = cfg
    if isinstance(cfg, DictConfig):
        raw = OmegaConf.to_container(cfg, resolve=False)
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception as e:  # a broken interpolation names its key
            return [f"config: {str(e).splitlines()[0]}"]
    errors = _apply(cfg, raw, "", TOP)
    for group, rules in (("trainer", TRAINER), ("model", MODEL), ("loss", LOSS), ("logger", LOGGER)):
        section = cfg.get(group)
        if not isinstance(section, Mapping):
            errors.append(f"{group}={section!r}: expected a config group (choose one with {group}=<name>)")
            continue
        errors += _apply(section, raw.get(group), f"{group}.", rules)
        if group == "trainer":
            errors += unknown_keys(section)
    logger = cfg.get("logger")
    if isinstance(logger, Mapping) and logger.get("name") == "wandb":
        errors += _apply(logger, raw.get("logger"), "logger.", WANDB)
    data = cfg.get("data")
    if not isinstance(data, Mapping):
        return [*errors, f"data={data!r}: expected a dataset config (+data=<name>)"]
    errors += _apply(data, raw["data"], "data.", DATA)
    errors += _check_splits(data, raw["data"], "data.", ("train", "test"))
    errors += _check_eval_classes(data)
    test = data.get("test_dataset")
    if test is not None:
        if not isinstance(test, Mapping):
            errors.append(f"data.test_dataset={test!r}: expected null or a dataset config")
        else:
            errors += _apply(test, raw["data"]["test_dataset"], "data.test_dataset.", TEST_DATASET)
            errors += _check_splits(test, raw["data"]["test_dataset"], "data.test_dataset.", ("test",))
    return errors


def _check_splits(data: Mapping[str, Any], raw: Any, prefix: str, parts: tuple[str, ...]) -> list[str]:
    errors = []
    valid = _splits(data.get("name"))
    for part in parts:
        options = data.get(part)
        if not isinstance(options, Mapping):
            continue
        errors += _apply(options, _get(raw, part), f"{prefix}{part}.", SPLIT)
        split = options.get("split")
        if valid and isinstance(split, str) and split not in valid:
            errors.append(f"{prefix}{part}.split={split!r}: expected one of: {', '.join(valid)}")
    return errors


def _check_eval_classes(data: Mapping[str, Any]) -> list[str]:
    classes, n = data.get("eval_classes"), data.get("num_classes")
    if classes is None or not _is_int(n):
        return []
    if isinstance(classes, list) and classes and all(_is_int(c) and 0 <= c < n for c in classes):
        return []
    return [f"data.eval_classes={classes!r}: expected null or a non-empty list of class ids in 0..{n - 1}"]


def exit_on_errors(cfg: DictConfig) -> None:
    """Print every config error (one line each) and exit with code 2; return when the config is valid."""
    errors = check_config(cfg)
    if errors:
        for line in errors:
            print(f"config error: {line}", file=sys.stderr)
        print(f"{len(errors)} config error(s); nothing was run.", file=sys.stderr)
        sys.exit(2)


#: less free space than this in the output folder counts as a full disk
MIN_FREE_BYTES = 16 * 2**20


def output_problem(folder: str | Path) -> str | None:
    """Why runs cannot be written below ``folder`` (read-only, full disk), or None."""
    folder = Path(folder).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        free = shutil.disk_usage(existing).free
    except OSError as e:
        return f"{folder} cannot be used ({e})"
    where = f"{free / 2**30:.2f} GiB free in {existing}"
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return f"{folder} is not writable ({existing} is read-only or not a folder; {where})"
    if free < MIN_FREE_BYTES:
        return f"{folder}: the disk is full ({where})"
    return None


class OutputCheck(Callback):
    """Before a run or a sweep writes anything: a read-only or full output folder is one line naming
    the path and the free space, exit 2 (instead of Hydra's "Unable to configure handler 'file'")."""

    def _check(self, config: DictConfig) -> None:
        folder = OmegaConf.select(config, "paths.output_dir", default=None)
        problem = output_problem(folder) if folder else None
        if problem:
            print(
                f"output error: paths.output_dir: {problem}; free some space or choose another folder "
                "(paths.output_dir=... or SEGLOSS_OUTPUT)",
                file=sys.stderr,
            )
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)
