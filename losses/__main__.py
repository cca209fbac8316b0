"""``python -m losses``: the registered losses as a Markdown table (name, category, origin, extra
inputs and loader-made target maps, how they compare with the authors' code, reference)."""

from __future__ import annotations

from . import CATEGORIES, list_losses, loss_info
from .fidelity import AUTHORS_CODE


def table() -> str:
    lines = [
        "| loss | category | survey | original | inputs | hyper-parameters (defaults) | authors' code "
        "| reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for category in CATEGORIES:
        for name in list_losses(category=category):
            info = loss_info(name)
            hp = ", ".join(f"{k}={v}" for k, v in info.hparams.items()) or "–"
            maps = info.gt_maps()  # target maps the loader can make (with the default hyper-parameters)
            extra = ", ".join((*info.inputs, *(f"map:{m}" for m in maps)))
            if info.needs_distance_maps and not maps:
                extra += " (distance maps in the step)"
            lines.append(
                f"| `{name}` | {category} | {'yes' if info.survey else 'extra'} | {info.original} | "
                f"{extra.strip() or '–'} | {hp} | {AUTHORS_CODE.get(name, '–')} | {info.reference} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
