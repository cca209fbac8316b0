"""Dataset registry, mirroring the loss registry: ``@register_dataset`` + ``build`` + ``list_datasets``.

A registered factory takes ``root`` and ``split`` plus dataset-specific keywords (from
``conf/data/<name>.yaml``) and returns a :class:`datasets.base.SegDataset`.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import SegDataset


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one registered dataset."""

    name: str
    factory: Callable[..., SegDataset]
    reference: str
    splits: tuple[str, ...]
    summary: str = ""
    prepare: str = ""  # how to obtain/prepare the data (shown when the root is missing)
    generated: bool = False  # the factory writes the data itself on first use (no root check)


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str, *, reference: str, splits: tuple[str, ...], prepare: str = "", generated: bool = False
) -> Callable:
    """Register a dataset factory under ``name`` (the name of its ``conf/data/<name>.yaml``)."""

    def deco(factory: Callable[..., SegDataset]) -> Callable[..., SegDataset]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        doc = inspect.getdoc(factory) or ""
        _REGISTRY[name] = DatasetInfo(
            name=name,
            factory=factory,
            reference=reference,
            splits=tuple(splits),
            summary=doc.split("\n\n")[0].replace("\n", " "),
            prepare=prepare,
            generated=generated,
        )
        return factory

    return deco


def list_datasets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered datasets matching a glob ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def dataset_info(name: str) -> DatasetInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}") from None


def build(name: str, *, root: str | Path, split: str, **cfg: Any) -> SegDataset:
    """Build split ``split`` of dataset ``name`` stored under ``root``.

    Raises ``FileNotFoundError`` naming the root and how to prepare the data when it is missing,
    and ``ValueError`` for an unknown split or keyword.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"dataset {name!r}: unknown split {split!r}; valid: {', '.join(info.splits)}")
    root = Path(root).expanduser()
    if not info.generated and not root.is_dir():
        hint = f" {info.prepare}" if info.prepare else ""
        raise FileNotFoundError(f"dataset {name!r}: data root {str(root)!r} does not exist.{hint}")
    params = inspect.signature(info.factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = set(cfg) - set(params)
        if unknown:
            valid = sorted(set(params) - {"root", "split"})
            raise ValueError(f"dataset {name!r}: unknown option(s) {sorted(unknown)}; valid: {valid}")
    return info.factory(root=root, split=split, **cfg)
