"""The summary table: one row per config, mean ± std over seeds, run counts, paper values.

:func:`summary_table` groups the rows of :func:`bench.results.load.load_records` by section
(experiment ``name``, ``data``, evaluation ``protocol``, ``model``) and row (loss ``category``,
``loss``, ``variant``). A row is one config: runs are grouped by their fingerprint without the seed
(``bench.identity``), so runs of one loss whose configs differ in any other key are separate rows,
never averaged (their ``variant`` labels tell them apart, see
:func:`bench.results.load.label_variants`). Each row reports mean ± std over seeds (sample std,
ddof=1) of every per-class, subset and mean metric, with counts of completed (``seeds``: distinct
seeds; a seed run twice counts once, its latest record), ``failed``, ``unfinished`` and ``missing``
runs — a missing run is a seed that other rows of the section have and this row lacks — and the
mean per completed run of the ``excluded``/``penalised`` empty (case, class) pairs. Nothing is
dropped. Values stay in record units. :func:`add_paper` adds the survey's reported values
(:func:`bench.results.load.load_paper`) and our difference to them; :func:`loss_table` is the
survey's Table 2 in registry form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

import losses

from .load import short
from .schema import KEYS, ROW, SECTION, is_metric

CATEGORY_ORDER = (*losses.CATEGORIES, "other")


def sections(summary: pd.DataFrame) -> Iterator[tuple[tuple[str, ...], pd.DataFrame]]:
    """The (name, data, protocol, model) sections of a summary table, in table order."""
    yield from summary.groupby(SECTION, sort=False, dropna=False)


def section_title(key: tuple[str, ...]) -> str:
    name, data, protocol, model = key
    return " · ".join(p for p in (name, data, f"{protocol} protocol" if protocol else "", model) if p)


def slug(key: tuple[str, ...]) -> str:
    """A file-name stem for a section: its non-empty keys joined by ``_``."""
    return re.sub(r"[^\w.-]+", "-", "_".join(p for p in key if p)).strip("-") or "table"


def _order(df: pd.DataFrame) -> pd.DataFrame:
    rank = df["category"].map({c: i for i, c in enumerate(CATEGORY_ORDER)})
    return (
        df.assign(_r=rank).sort_values([*SECTION, "_r", "loss", "variant"], kind="stable").drop(columns="_r")
    )


def summary_table(runs: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean and std over seeds per config (row :data:`KEYS` + ``config``) of the completed runs,
    with run counts.

    Columns: the keys, ``config``, ``<metric>`` and ``<metric>:std`` for every metric column of ``runs``,
    ``seeds``, ``failed``, ``unfinished``, ``missing``, ``excluded``, ``penalised`` (means per
    completed run) and ``units``; with ``paper`` (see :func:`bench.results.load.load_paper`) also
    ``paper:<metric>`` and ``delta:<metric>``. Rows are ordered by section, category (pixel,
    region, boundary, combination, other), loss and variant.
    """
    metrics = [c for c in runs.columns if is_metric(c)]
    out = []
    for _, section in runs.groupby(SECTION, sort=False, dropna=False):
        universe = set(section["seed"].dropna())
        for key, group in section.groupby([*ROW, "config"], sort=False, dropna=False):
            completed = group[group["status"] == "completed"]
            done = completed.drop_duplicates("seed", keep="last")  # a seed counts once
            row: dict[str, Any] = dict(zip([*KEYS, "config"], (*section.iloc[0][SECTION], *key), strict=True))
            for col in metrics:
                vals = done[col].dropna().to_numpy(dtype=float)
                row[col] = vals.mean() if len(vals) else np.nan
                row[f"{col}:std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
            row["seeds"] = len(done)
            row["failed"] = int((group["status"] == "failed").sum())
            row["unfinished"] = len(group) - len(completed) - row["failed"]
            row["missing"] = len(universe - set(group["seed"].dropna()))
            for col in ("excluded", "penalised"):
                row[col] = done[col].mean() if done[col].notna().any() else np.nan
            row["units"] = ",".join(sorted(set(done["units"].dropna()) - {""}))
            out.append(row)
    table = _order(pd.DataFrame(out)).reset_index(drop=True)
    return add_paper(table, paper) if paper is not None else table


def add_paper(summary: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """``paper:<key>`` (the reported value) and ``delta:<key>`` (ours − paper) for the rows with the
    default hyper-parameters whose data, loss (and protocol/model where given) match a paper row."""
    found: dict[str, dict[int, float]] = {}
    for i, row in summary.iterrows():
        if row["variant"]:
            continue
        match = paper[
            (paper["dataset"] == row["data"])
            & (paper["loss"] == row["loss"])
            & paper["protocol"].isin(["", row["protocol"]])
            & paper["model"].isin(["", row["model"]])
        ]
        for key, hits in match.groupby("key"):
            if len(hits) > 1:
                raise ValueError(
                    f"paper values: {len(hits)} rows give {key} for "
                    f"{row['data']}/{row['model']}/{row['loss']} "
                    f"(sources {', '.join(hits['source'])}); fill protocol/model to tell them apart"
                )
            found.setdefault(key, {})[i] = hits["ref"].iloc[0]
    out = summary.copy()
    for key, refs in found.items():
        ref = pd.Series(refs, dtype=float).reindex(out.index)
        ours = out[key] if key in out else pd.Series(np.nan, index=out.index)
        out[f"paper:{key}"] = ref
        out[f"delta:{key}"] = ours - ref
    return out


def loss_table() -> pd.DataFrame:
    """The survey's Table 2 in registry form: category, loss, reference, hyper-parameters with their
    defaults, the original formulation (binary / multi-class) and whether it is one of the 25."""
    rows = []
    for name in losses.list_losses():
        info = losses.loss_info(name)
        rows.append(
            {
                "category": info.category,
                "loss": name,
                "survey": "yes" if info.survey else "extra",
                "reference": info.reference,
                "hyper-parameters": ", ".join(f"{k}={short(v)}" for k, v in info.hparams.items()) or "–",
                "original": info.original,
            }
        )
    df = pd.DataFrame(rows)
    return (
        df.assign(_r=df["category"].map(CATEGORY_ORDER.index)).sort_values(["_r", "loss"]).drop(columns="_r")
    )
