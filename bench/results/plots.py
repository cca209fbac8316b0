"""Figures of a summary table and its runs, each written as PNG and PDF (matplotlib, Agg canvas).

- :func:`heatmap`: losses × classes of the section's per-class metric (DSC, or IoU under the
  ``cityscapes`` protocol), in %;
- :func:`bars`: the mean metrics per loss with ± std over seeds as error bars, coloured by category;
- :func:`curves`: training-loss curves (mean over seeds at each logged step) and, when the runs
  evaluated periodically, the test metric against the step, one line per loss;
- :func:`sensitivity`: a loss's metric against each hyper-parameter value tried (one panel each;
  values in increasing order, evenly spaced; the default configuration drawn as a diamond).

Each function takes one section (rows of :func:`bench.results.table.summary_table` or runs of
:func:`bench.results.load.load_records` sharing name, data, protocol and model) and returns the data
it drew, in record units. :func:`plot_all` draws every figure of every section into a folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .schema import (
    HEADLINE,
    LOWER_IS_BETTER,
    SECTION,
    TRAIN_LOSS,
    display_scale,
    eval_key,
    is_metric,
    per_class_metric,
)
from .stats import sensitivity_table
from .table import section_title, slug

CATEGORY_COLORS = {"pixel": "C0", "region": "C1", "boundary": "C2", "combination": "C3", "other": "C7"}


def _save(fig: Figure, stem: Path) -> None:
    fig.savefig(stem.with_suffix(".png"), dpi=150, bbox_inches="tight")
    fig.savefig(stem.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})


def _labels(t: pd.DataFrame) -> list[str]:
    return [f"{r.loss} ({r.variant})" if r.variant else r.loss for r in t.itertuples()]


def heatmap(section: pd.DataFrame, stem: Path, *, metric: str = "dsc", title: str = "") -> pd.DataFrame:
    """Losses × classes of the per-class ``metric`` means; returns that matrix (fractions; no
    figure when no class has a value)."""
    cols = [
        c for c in section.columns if c.startswith(f"{metric}/") and is_metric(c) and section[c].notna().any()
    ]
    matrix = pd.DataFrame(
        section[cols].to_numpy(dtype=float),
        index=_labels(section),
        columns=[c.split("/", 1)[1] for c in cols],
    )
    if not cols:
        return matrix
    scale = display_scale(metric)
    fig = Figure(figsize=(1.2 + 0.75 * len(cols), 1.0 + 0.35 * len(matrix)))
    ax = fig.subplots()
    cmap = "viridis_r" if metric in LOWER_IS_BETTER else "viridis"
    limits = {} if metric in LOWER_IS_BETTER else {"vmin": 0, "vmax": 100}
    im = ax.imshow(matrix.to_numpy() * scale, cmap=cmap, aspect="auto", **limits)
    ax.set_xticks(range(len(cols)), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(matrix)), matrix.index)
    for (i, j), v in np.ndenumerate(matrix.to_numpy() * scale):
        if not np.isnan(v):
            ax.text(
                j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="k" if im.norm(v) > 0.6 else "w"
            )
    fig.colorbar(im, ax=ax, label=f"{metric.upper()}" + ("" if metric in LOWER_IS_BETTER else " (%)"))
    ax.set_title(title, fontsize=9)
    _save(fig, stem)
    return matrix


def bars(section: pd.DataFrame, stem: Path, *, title: str = "") -> pd.DataFrame:
    """One panel per mean metric with values: bars of the means, error bars of the stds over seeds.

    Returns the drawn columns (empty, and no figure, when no metric has a value)."""
    keys = [k for k in HEADLINE if k in section and section[k].notna().any()]
    if not keys:
        return pd.DataFrame()
    drawn = section[["loss", "variant", "category", *keys, *(f"{k}:std" for k in keys)]].reset_index(
        drop=True
    )
    fig = Figure(figsize=(2.0 + 0.4 * len(section), 2.6 * len(keys)))
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    x = np.arange(len(section))
    colors = [CATEGORY_COLORS.get(c, "C7") for c in section["category"]]
    units = ",".join(sorted({u for u in section["units"] if u})) or "?"
    for ax, key in zip(axes, keys, strict=True):
        scale = display_scale(key)
        ax.bar(x, section[key] * scale, yerr=section[f"{key}:std"].fillna(0) * scale, color=colors, capsize=3)
        ax.set_ylabel(f"{HEADLINE[key]} ({units if key in LOWER_IS_BETTER else '%'})")
    present = dict.fromkeys(section["category"])
    axes[0].legend(
        handles=[Patch(color=CATEGORY_COLORS.get(c, "C7"), label=c) for c in present],
        fontsize=7,
        ncol=len(present),
    )
    axes[-1].set_xticks(x, _labels(section), rotation=45, ha="right")
    axes[0].set_title(title, fontsize=9)
    _save(fig, stem)
    return drawn


def curves(runs: pd.DataFrame, stem: Path, *, metric: str = "dsc", title: str = "") -> pd.DataFrame:
    """Training loss (and periodic test ``metric``) against the step, mean over seeds per loss.

    Returns long rows ``label, kind ("train/loss" | "test/<metric>"), step, value``; empty (and no
    figure) when no run has a history.
    """
    rows = []
    for r in runs.itertuples():
        label = f"{r.loss} ({r.variant})" if r.variant else r.loss
        history = r.history or {}
        for h in history.get("train", []):
            rows.append((label, TRAIN_LOSS, h["step"], h.get(TRAIN_LOSS)))
        for h in history.get("eval", []):
            rows.append((label, eval_key(metric), h["step"], h.get(eval_key(metric))))
    long = pd.DataFrame(rows, columns=["label", "kind", "step", "value"])
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    drawn = long.groupby(["label", "kind", "step"], sort=False)["value"].mean().reset_index()
    if drawn.empty:
        return drawn
    kinds = list(dict.fromkeys(drawn["kind"]))
    fig = Figure(figsize=(6.0, 2.8 * len(kinds)))
    axes = fig.subplots(len(kinds), 1, sharex=True, squeeze=False)[:, 0]
    for ax, kind in zip(axes, kinds, strict=True):
        for label, g in drawn[drawn["kind"] == kind].groupby("label", sort=False):
            ax.plot(g["step"], g["value"] * (1 if kind == TRAIN_LOSS else display_scale(metric)), label=label)
        ax.set_ylabel(kind)
    axes[-1].set_xlabel("step")
    axes[0].legend(fontsize=7, ncol=2)
    axes[0].set_title(title, fontsize=9)
    _save(fig, stem)
    return drawn


def sensitivity(table: pd.DataFrame, stem: Path, *, title: str = "") -> pd.DataFrame:
    """One panel per hyper-parameter of :func:`bench.results.stats.sensitivity_table` rows of one loss."""
    hparams = list(dict.fromkeys(table["hparam"]))
    fig = Figure(figsize=(3.2 * len(hparams), 2.8))
    axes = fig.subplots(1, len(hparams), squeeze=False)[0]
    for ax, hparam in zip(axes, hparams, strict=True):
        t = table[table["hparam"] == hparam]
        scale = display_scale(t["metric"].iloc[0])
        x = np.arange(len(t))
        ax.errorbar(x, t["mean"] * scale, yerr=t["std"].fillna(0) * scale, marker="o", capsize=3)
        d = t["default"].to_numpy()
        ax.plot(x[d], t["mean"].to_numpy()[d] * scale, "D", color="C3", label="default")
        ax.set_xticks(x, [f"{v:g}" if isinstance(v, float) else str(v) for v in t["value"]], rotation=45)
        ax.set_xlabel(hparam)
    metric = table["metric"].iloc[0]
    axes[0].set_ylabel(metric.upper() + ("" if metric in LOWER_IS_BETTER else " (%)"))
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, stem)
    return table


def plot_all(summary: pd.DataFrame, runs: pd.DataFrame, out: Path) -> list[Path]:
    """Every figure of every section of ``summary`` (and its ``runs``) into ``out``; the PNG paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    sens = sensitivity_table(runs)
    for key, t in summary.groupby(SECTION, sort=False, dropna=False):
        name, title, metric = slug(key), section_title(key), per_class_metric(key[2])
        if not heatmap(t, out / f"heatmap_{name}", metric=metric, title=title).empty:
            written.append(out / f"heatmap_{name}.png")
        if not bars(t, out / f"bars_{name}", title=title).empty:
            written.append(out / f"bars_{name}.png")
        mine = runs[(runs[SECTION] == pd.Series(key, index=SECTION)).all(axis=1)]
        if not curves(mine, out / f"curves_{name}", metric=metric, title=title).empty:
            written.append(out / f"curves_{name}.png")
        if not sens.empty:
            mine_sens = sens[(sens[SECTION] == pd.Series(key, index=SECTION)).all(axis=1)]
            for loss, s in mine_sens.groupby("loss", sort=False):
                sensitivity(s, out / f"sensitivity_{name}_{loss}", title=f"{loss} · {title}")
                written.append(out / f"sensitivity_{name}_{loss}.png")
    return written
