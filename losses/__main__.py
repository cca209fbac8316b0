"""``python -m losses``: the registered losses as a Markdown table (name, category, origin, how they
compare with the authors' code, reference)."""

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
            extra = ", ".join(info.inputs) + (" (distance maps)" if info.needs_distance_maps else "")
            lines.append(
                f"| `{name}` | {category} | {'yes' if info.survey else 'extra'} | {info.original} | "
                f"{extra.strip() or '–'} | {hp} | {AUTHORS_CODE.get(name, '–')} | {info.reference} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
