"""One-decorator loss registry: ``@register_loss`` + ``create_loss`` + ``list_losses`` + ``loss_info``.

A registered factory (usually an ``nn.Module`` subclass) takes ``num_classes`` and ``ignore_index``
plus its own keyword hyper-parameters. Their defaults are read from the factory's signature; their
valid ranges (numbers) and choices (strings; booleans are always ``True``/``False``) are declared
once in the decorator and checked by ``create_loss`` before construction. Region and combination
losses share MONAI's options ``include_background``, ``smooth`` and ``batch``.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

Category = Literal["pixel", "region", "boundary", "combination"]
CATEGORIES: tuple[str, ...] = ("pixel", "region", "boundary", "combination")

#: Extra inputs a loss may ask the runner for, besides ``(logits, target)``:
#: ``aux`` — the output of an auxiliary head with ``aux_channels`` channels, same size as logits;
#: ``features`` — the decoder's feature map ``[B,F,h,w]`` (before the segmentation head);
#: ``progress`` — training progress in [0, 1] (step / max_steps), for weight schedules.
RUNTIME_INPUTS: tuple[str, ...] = ("aux", "features", "progress")

#: Maps of the target a loss may declare (``maps=``), computed in the loader workers and passed as
#: keyword arguments named like them; see ``losses.distance.GT_MAPS``.
Maps = tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]]

_SKIP = {"self", "num_classes", "ignore_index"}


@dataclass(frozen=True)
class LossInfo:
    """Metadata of one registered loss."""

    name: str
    factory: Callable[..., nn.Module]
    category: Category
    reference: str
    original: Literal["binary", "multi-class"] = "multi-class"
    survey: bool = True  # one of the 25 losses of the survey (False: an extra from peers)
    needs_distance_maps: bool = False
    inputs: tuple[str, ...] = ()
    aux_channels: int | Callable[[int], int] = 0
    maps: Maps = ()
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    summary: str = ""
    #: ``(info, params) -> info`` for losses whose runtime inputs depend on their params (``sum``)
    specialise: Callable[[LossInfo, Mapping[str, Any]], LossInfo] | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters and their defaults, read from the factory's signature (tuples as lists,
        the form a config or a run record holds)."""
        sig = inspect.signature(self.factory)
        return {
            k: _as_config(p.default)
            for k, p in sig.parameters.items()
            if k not in _SKIP and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    @property
    def all_choices(self) -> dict[str, tuple[Any, ...]]:
        """The declared ``choices`` plus ``(False, True)`` for every boolean hyper-parameter."""
        flags = {k: (False, True) for k, v in self.hparams.items() if isinstance(v, bool)}
        return {**flags, **self.choices}

    def num_aux_channels(self, num_classes: int) -> int:
        return self.aux_channels(num_classes) if callable(self.aux_channels) else self.aux_channels

    def gt_maps(self, hparams: dict[str, Any] | None = None) -> tuple[str, ...]:
        """The target maps the loss built with ``hparams`` (defaults for the rest) takes as keywords."""
        return self.maps({**self.hparams, **(hparams or {})}) if callable(self.maps) else self.maps


def _as_config(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_as_config(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_config(v) for k, v in value.items()}
    return value


_REGISTRY: dict[str, LossInfo] = {}


def register_loss(
    name: str,
    *,
    category: Category,
    reference: str,
    original: Literal["binary", "multi-class"] = "multi-class",
    survey: bool = True,
    needs_distance_maps: bool = False,
    inputs: tuple[str, ...] = (),
    aux_channels: int | Callable[[int], int] = 0,
    maps: Maps = (),
    ranges: dict[str, tuple[float | None, float | None]] | None = None,
    choices: dict[str, tuple[Any, ...]] | None = None,
    specialise: Callable[[LossInfo, Mapping[str, Any]], LossInfo] | None = None,
) -> Callable:
    """Register a loss factory under ``name`` (the name of its ``conf/loss/<name>.yaml``).

    ``ranges`` bound numeric hyper-parameters, ``choices`` list the allowed values of the others;
    ``specialise`` derives the metadata of one configuration (e.g. the inputs of a composite's terms).
    """
    if category not in CATEGORIES:
        raise ValueError(f"loss {name!r}: category {category!r} is not one of {CATEGORIES}")
    unknown = set(inputs) - set(RUNTIME_INPUTS)
    if unknown:
        raise ValueError(f"loss {name!r}: unknown runtime inputs {sorted(unknown)}")
    from .distance import GT_MAPS

    if not callable(maps) and set(maps) - set(GT_MAPS):
        raise ValueError(f"loss {name!r}: unknown maps {sorted(set(maps) - set(GT_MAPS))}")

    def deco(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is registered twice")
        doc = inspect.getdoc(factory) or ""
        info = LossInfo(
            name=name,
            factory=factory,
            category=category,
            reference=reference,
            original=original,
            survey=survey,
            needs_distance_maps=needs_distance_maps,
            inputs=tuple(inputs),
            aux_channels=aux_channels,
            maps=maps if callable(maps) else tuple(maps),
            ranges=dict(ranges or {}),
            choices={k: tuple(v) for k, v in (choices or {}).items()},
            specialise=specialise,
            summary=doc.split("\n\n")[0].replace("\n", " "),
        )
        undeclared = (set(info.ranges) | set(info.choices)) - set(info.hparams)
        if undeclared:
            raise ValueError(f"loss {name!r}: ranges/choices name no hyper-parameter: {sorted(undeclared)}")
        _REGISTRY[name] = info
        return factory

    return deco


def list_losses(pattern: str = "*", category: str | None = None, survey: bool | None = None) -> list[str]:
    """Sorted names of the registered losses matching a glob ``pattern`` (and ``category``;
    ``survey=True``: only the survey's losses, ``False``: only the extras)."""
    return sorted(
        n
        for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern)
        and (category is None or info.category == category)
        and (survey is None or info.survey == survey)
    )


def loss_info(name: str, params: Mapping[str, Any] | None = None) -> LossInfo:
    """The metadata record of ``name``; a clear ``KeyError`` names the registered losses.

    With ``params`` (the loss's hyper-parameters, defaults where absent), the record of that
    configuration: a composite reports the runtime inputs and auxiliary channels of its terms.
    """
    try:
        info = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; registered losses: {', '.join(list_losses())}") from None
    if info.specialise is None:
        return info
    return info.specialise(info, {**info.hparams, **(params or {})})


def specialised(info: LossInfo, **changes: Any) -> LossInfo:
    """A copy of ``info`` with ``changes`` (for ``specialise`` hooks)."""
    return replace(info, specialise=None, **changes)


def check_range(name: str, field_: str, value: Any, low: float | None, high: float | None) -> None:
    """Raise ``ValueError`` naming ``field_`` when a numeric hyper-parameter leaves [low, high]."""
    values = value if isinstance(value, list | tuple) else [value]
    for v in values:
        if v is None:
            continue
        if not isinstance(v, int | float) or isinstance(v, bool) or math.isnan(v):
            raise ValueError(f"loss {name!r}: {field_}={value!r} must be a number")
        if (low is not None and v < low) or (high is not None and v > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise ValueError(
                f"loss {name!r}: {field_}={value!r} is outside its valid range [{lo}, {hi}]; "
                f"set loss.params.{field_} within it"
            )


def check_choice(name: str, field_: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` naming ``field_`` when ``value`` is not one of ``allowed``."""
    # bool is checked by type: 0 == False would otherwise pass
    same_type = all(isinstance(a, bool) for a in allowed) == isinstance(value, bool)
    if not (same_type and value in allowed):
        raise ValueError(
            f"loss {name!r}: {field_}={value!r} is not one of {list(allowed)}; "
            f"set loss.params.{field_} to one of them"
        )


def create_loss(name: str, *, num_classes: int, ignore_index: int = 255, **hparams: Any) -> nn.Module:
    """Build the loss ``name`` for ``num_classes`` classes.

    Unknown hyper-parameters and values outside the declared ranges or choices raise ``ValueError``
    naming the field and what to set. The returned module is called as
    ``loss(logits [B,C,H,W], target [B,H,W] int64, **inputs)`` where ``inputs`` are the runtime
    inputs listed in ``loss_info(name, hparams).inputs`` and, optionally, the target maps of
    ``loss_info(name, hparams).gt_maps(hparams)`` (computed by the loss when not given).
    """
    info = loss_info(name)
    if num_classes < 1:
        raise ValueError(f"loss {name!r}: num_classes={num_classes} must be >= 1")
    known = info.hparams
    unknown = set(hparams) - set(known)
    if unknown:
        raise ValueError(
            f"loss {name!r}: unknown hyper-parameter(s) {sorted(unknown)}; valid: {sorted(known) or 'none'}"
        )
    for field_, (low, high) in info.ranges.items():
        check_range(name, field_, hparams.get(field_, known.get(field_)), low, high)
    for field_, allowed in info.all_choices.items():
        check_choice(name, field_, hparams.get(field_, known.get(field_)), allowed)
    return info.factory(num_classes=num_classes, ignore_index=ignore_index, **hparams)
