"""Composite losses: ``sum``, a weighted sum of registered losses, each with its own params.

>>> terms = [{"name": "lovasz", "weight": 1}, {"name": "ce", "params": {"label_smoothing": 0.1}}]
>>> loss = create_loss("sum", num_classes=9, terms=terms)  # weight: 1 when left out

From the command line: ``+loss=sum 'loss.params.terms=[{name: lovasz, weight: 1}, {name: ce, weight: 1}]'``.
The composite asks the runner for the union of its terms' runtime inputs and target maps
(``loss_info("sum", params)``);
terms that need an auxiliary head each get their own slice of its channels, in the order of the terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .base import SegLoss
from .registry import (
    RUNTIME_INPUTS,
    LossInfo,
    create_loss,
    list_losses,
    loss_info,
    register_loss,
    specialised,
)

#: ``sum``'s default: Lovász-Softmax plus cross-entropy, equally weighted (the combination Berman et
#: al. and many segmentation codebases train with).
DEFAULT_TERMS: tuple[dict[str, Any], ...] = (
    {"name": "lovasz", "weight": 1.0},
    {"name": "ce", "weight": 1.0},
)
TERM_KEYS = ("name", "weight", "params")


def parse_terms(terms: Any) -> list[tuple[str, float, dict[str, Any]]]:
    """``(name, weight, params)`` of each term; ``ValueError`` naming ``terms[i].<key>`` otherwise."""
    where = "loss 'sum': terms"
    if isinstance(terms, str | bytes | Mapping) or not isinstance(terms, Sequence) or not terms:
        raise ValueError(
            f"{where}={terms!r} must be a non-empty list of "
            "{name: <loss>, weight: <number>, params: {...}}"
        )
    out = []
    for i, term in enumerate(terms):
        if not isinstance(term, Mapping):
            raise ValueError(f"{where}[{i}]={term!r} must be a mapping {{name: <loss>, weight: <number>}}")
        extra = set(term) - set(TERM_KEYS)
        if extra:
            raise ValueError(f"{where}[{i}] has unknown key(s) {sorted(extra)}; valid: {list(TERM_KEYS)}")
        name, weight, params = term.get("name"), term.get("weight", 1.0), term.get("params") or {}
        if name not in list_losses():
            raise ValueError(
                f"{where}[{i}].name={name!r} is not a registered loss; use one of {', '.join(list_losses())}"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise ValueError(f"{where}[{i}].weight={weight!r} must be a finite number >= 0")
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}[{i}].params={params!r} must be a mapping of {name}'s hyper-parameters")
        out.append((name, float(weight), dict(params)))
    return out


def _specialise(info: LossInfo, params: Mapping[str, Any]) -> LossInfo:
    """The union of the terms' runtime inputs and target maps; auxiliary channels add up."""
    parsed = parse_terms(params["terms"])
    terms = [loss_info(name, p) for name, _, p in parsed]
    maps = (m for t, (_, _, p) in zip(terms, parsed, strict=True) for m in t.gt_maps(p))
    return specialised(
        info,
        inputs=tuple(x for x in RUNTIME_INPUTS if any(x in t.inputs for t in terms)),
        aux_channels=lambda c: sum(t.num_aux_channels(c) for t in terms),
        needs_distance_maps=any(t.needs_distance_maps for t in terms),
        maps=tuple(dict.fromkeys(maps)),
    )


@register_loss(
    "sum",
    category="combination",
    reference="Weighted sum of registered losses, each with its own hyper-parameters (this benchmark)",
    survey=False,
    specialise=_specialise,
)
class SumLoss(SegLoss):
    """Weighted sum ``Σ_i w_i · L_i`` of registered losses (``terms``: ``{name, weight, params}``).

    Each term is built by ``create_loss`` with the composite's ``num_classes`` and ``ignore_index``
    and is called with the runtime inputs it declares; an ``aux`` input is split along its channels,
    one slice per term that asks for it, in the order of the terms. Default: ``lovasz`` + ``ce``,
    weight 1 each. Region-loss options (``include_background``, ``smooth``, ``batch``) belong to
    the terms' ``params``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        terms: Sequence[Mapping[str, Any]] = DEFAULT_TERMS,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        parsed = parse_terms(terms)
        built = []
        for i, (name, _, params) in enumerate(parsed):
            try:
                built.append(create_loss(name, num_classes=num_classes, ignore_index=ignore_index, **params))
            except ValueError as err:  # name the term; its fields live under terms[i].params
                message = str(err).replace("loss.params.", f"loss.params.terms[{i}].params.")
                raise ValueError(f"loss 'sum': terms[{i}] ({name}): {message}") from None
        self.names = [name for name, _, _ in parsed]
        self.weights = [w for _, w, _ in parsed]
        self.terms = nn.ModuleList(built)
        self.inputs: list[tuple[str, ...]] = []
        self.aux_slices: list[slice | None] = []
        start = 0
        for name, _, params in parsed:
            info = loss_info(name, params)
            self.inputs.append((*info.inputs, *info.gt_maps(params)))
            width = info.num_aux_channels(num_classes) if "aux" in info.inputs else 0
            self.aux_slices.append(slice(start, start + width) if width else None)
            start += width

    def forward(self, logits: Tensor, target: Tensor, **inputs: Any) -> Tensor:
        parts = zip(self.weights, self.terms, self.inputs, self.aux_slices, strict=True)
        return sum(w * t(logits, target, **self.term_inputs(inputs, i, a)) for w, t, i, a in parts)

    @staticmethod
    def term_inputs(inputs: dict[str, Any], wanted: tuple[str, ...], aux: slice | None) -> dict[str, Any]:
        """The runtime inputs and target maps one term declares (its slice of ``aux``); maps the
        caller did not pass are left to the term, which computes them."""
        out = {k: inputs[k] for k in wanted if k != "aux" and k in inputs}
        if aux is not None:
            out["aux"] = inputs["aux"][:, aux]
        return out

    def extra_repr(self) -> str:
        terms = " + ".join(f"{w:g}·{n}" for w, n in zip(self.weights, self.names, strict=True))
        return f"{super().extra_repr()}, {terms}"
