"""Dataset registry in the loss registry's pattern: ``@register_dataset`` + ``create_dataset`` +
``list_datasets`` + ``dataset_info``.

A registered dataset is a :class:`datasets.base.SegDataset` subclass built as
``cls(root, split, **options)``. Its options and their defaults are read from the constructor's
signature; a constructor that forwards ``**options`` to its base class accepts the base class's
options too (a subclass states only what it adds or whose default it changes). The values of one
run come from ``conf/data/<name>.yaml`` (its ``train``/``test`` blocks).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import SegDataset

_POSITIONAL = ("root", "split")


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one registered dataset."""

    name: str
    factory: type[SegDataset]
    reference: str
    splits: tuple[str, ...]
    summary: str = ""
    prepare: str = ""  # how to obtain/prepare the data (shown when the root is missing)
    generated: bool = False  # the dataset writes its data itself on first use (no root check)

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options besides ``root`` and ``split``, with their defaults."""
        params = _constructor_parameters(self.factory)
        return {k: p.default for k, p in params.items() if k not in _POSITIONAL}


def _constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Named parameters of ``cls.__init__`` and, while a constructor forwards ``**options``, of the
    next one up the method resolution order (the subclass's default of a name wins)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]  # no self
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                found.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return found


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str, *, reference: str, splits: tuple[str, ...], prepare: str = "", generated: bool = False
) -> Callable[[type[SegDataset]], type[SegDataset]]:
    """Register a dataset class under ``name`` (the name of its ``conf/data/<name>.yaml``); the first
    paragraph of its docstring is the summary."""

    def deco(cls: type[SegDataset]) -> type[SegDataset]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        doc = inspect.getdoc(cls) or ""
        _REGISTRY[name] = DatasetInfo(
            name=name,
            factory=cls,
            reference=reference,
            splits=tuple(splits),
            summary=doc.split("\n\n")[0].replace("\n", " "),
            prepare=prepare,
            generated=generated,
        )
        return cls

    return deco


def list_datasets(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered datasets, those matching the glob ``pattern`` if given."""
    return sorted(n for n in _REGISTRY if pattern is None or fnmatch.fnmatch(n, pattern))


def dataset_info(name: str) -> DatasetInfo:
    """The metadata record of ``name``; a clear ``KeyError`` names the registered datasets."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}") from None


def create_dataset(name: str, *, root: str | Path, split: str, **options: Any) -> SegDataset:
    """Split ``split`` of dataset ``name`` stored under ``root``, built with ``options``.

    Raises ``FileNotFoundError`` naming the root and how to prepare the data when it is missing,
    and ``ValueError`` naming the dataset and the valid choices for an unknown split or option.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"dataset {name!r}: unknown split {split!r}; valid: {', '.join(info.splits)}")
    root = Path(root).expanduser()
    if not info.generated and not root.is_dir():
        hint = f" {info.prepare}" if info.prepare else ""
        raise FileNotFoundError(f"dataset {name!r}: data root {str(root)!r} does not exist.{hint}")
    unknown = set(options) - set(info.options)
    if unknown:
        valid = sorted(info.options)
        raise ValueError(f"dataset {name!r}: unknown option(s) {sorted(unknown)}; valid: {valid}")
    return info.factory(root, split, **options)
