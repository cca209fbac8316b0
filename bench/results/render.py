"""The summary table as Markdown, LaTeX, HTML and CSV, all from one layout.

:func:`layout` turns a summary table (:func:`bench.results.table.summary_table`) into one
:class:`Layout` per section: the columns (per-class metric, mean metrics, paper values and our
difference to them, run counts) and, per row, the cells with their numbers in displayed units (DSC/IoU
in %, distances in the record's units) and marks: per section the best value of each metric column
is marked 1 (bold), the second best 2 (underlined) (HD95/ASSD: lower is better; values compared at
the printed precision; a best needs two distinct values, a second best three). Per-class columns
are DSC, or IoU under the ``cityscapes`` protocol (dataset-level mIoU). The mean columns are DSC,
HD95 and mIoU and the class-subset mIoUs (the paper form) unless ``metrics`` (``--metrics``) selects
others from :data:`~bench.results.schema.HEADLINE`. :func:`to_markdown`, :func:`to_latex`,
:func:`to_html` and :func:`to_csv` only format a layout.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import (
    ALWAYS,
    HEADLINE,
    LOWER_IS_BETTER,
    PAPER_FORM,
    SCORES,
    display_scale,
    is_metric,
    per_class_metric,
)
from .table import section_title, sections, slug


@dataclass(frozen=True)
class Column:
    """A table column: the summary ``key`` it shows, its header ``label`` and its ``kind``
    (``metric``: mean ± std, marked; ``paper``: a reported value; ``delta``: ours − paper;
    ``text``: run counts and the like)."""

    key: str
    label: str
    kind: str = "metric"


@dataclass(frozen=True)
class Cell:
    """A cell: ``value`` and ``std`` in displayed units (NaN: none), ``mark`` (1 best, 2 second
    best, 0 none) and, for a text column, its ``note``."""

    kind: str = "metric"
    value: float = math.nan
    std: float = math.nan
    mark: int = 0
    note: str = ""

    @property
    def text(self) -> str:
        if self.kind == "text":
            return self.note
        if math.isnan(self.value):
            return "–"
        if self.kind == "delta":
            return f"{self.value:+.2f}"
        s = f"{self.value:.2f}"
        return s if math.isnan(self.std) else f"{s} ± {self.std:.2f}"


@dataclass(frozen=True)
class Row:
    """A table row: the loss ``category`` (row group), its ``label`` (loss and variant) and one
    cell per column of its layout."""

    category: str
    label: str
    cells: tuple[Cell, ...]


@dataclass
class Layout:
    """One section of a summary table as rendered: ``title``, file-name ``slug``, ``columns``
    (after category and loss) and ``rows`` in table order."""

    title: str
    slug: str
    columns: list[Column]
    rows: list[Row]

    def cell(self, label: str, key: str) -> Cell:
        """The cell of row ``label`` (``"loss"`` or ``"loss (variant)"``) in column ``key``."""
        j = [c.key for c in self.columns].index(key)
        (row,) = [r for r in self.rows if r.label == label]
        return row.cells[j]

    def groups(self) -> list[tuple[str, list[Row]]]:
        """The rows grouped by consecutive category."""
        out: list[tuple[str, list[Row]]] = []
        for r in self.rows:
            if not out or out[-1][0] != r.category:
                out.append((r.category, []))
            out[-1][1].append(r)
        return out


def check_metrics(metrics: Sequence[str] | None) -> tuple[str, ...]:
    """The mean columns to render: :data:`PAPER_FORM` for ``None``, every :data:`HEADLINE` key for
    ``["all"]``, else ``metrics`` in their order (names checked)."""
    if metrics is None:
        return PAPER_FORM
    if list(metrics) == ["all"]:
        return tuple(HEADLINE)
    unknown = [m for m in metrics if m not in HEADLINE]
    if unknown or not metrics:
        raise ValueError(f"--metrics {','.join(metrics)}: choose from {', '.join(HEADLINE)} or 'all'")
    return tuple(metrics)


def _columns(t: pd.DataFrame, per_class: str, metrics: Sequence[str] | None) -> list[Column]:
    units = ",".join(sorted({u for u in t["units"] if u})) or "?"
    classes = [c for c in t.columns if c.startswith(per_class + "/") and is_metric(c) and t[c].notna().any()]
    metric_cols = [Column(c, c.split("/", 1)[1]) for c in classes]
    for key in check_metrics(metrics):
        if key in ALWAYS or (key in t and t[key].notna().any()):
            unit, arrow = (units, "↓") if key in LOWER_IS_BETTER else ("%", "↑")
            metric_cols.append(Column(key, f"{HEADLINE[key]} ({unit}) {arrow}"))
    cols = []
    for c in metric_cols:
        cols.append(c)
        if f"paper:{c.key}" in t and t[f"paper:{c.key}"].notna().any():
            cols += [Column(f"paper:{c.key}", "paper", "paper"), Column(f"delta:{c.key}", "Δ", "delta")]
    return [*cols, Column("seeds", "seeds", "text"), Column("empty", "empty excl./pen.", "text")]


def _marks(values: np.ndarray, lower: bool) -> list[int]:
    shown = [None if math.isnan(v) else round(v, 2) for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=not lower)
    best = distinct[0] if len(distinct) >= 2 else None
    second = distinct[1] if len(distinct) >= 3 else None
    return [1 if v is not None and v == best else 2 if v is not None and v == second else 0 for v in shown]


def _notes(t: pd.DataFrame, key: str) -> list[str]:
    if key == "seeds":
        return [
            f"{r['seeds']}" + "".join(f" ({r[k]} {k})" for k in ("failed", "unfinished", "missing") if r[k])
            for _, r in t.iterrows()
        ]
    return [
        "–" if np.isnan(r["excluded"]) else f"{r['excluded']:g}/{r['penalised']:g}" for _, r in t.iterrows()
    ]


def _cells(t: pd.DataFrame, c: Column) -> list[Cell]:
    if c.kind == "text":
        return [Cell("text", note=n) for n in _notes(t, c.key)]
    metric = c.key.split(":", 1)[-1]
    scale = display_scale(metric)
    values = t[c.key].to_numpy(dtype=float) * scale
    if c.kind != "metric":
        return [Cell(c.kind, v) for v in values]
    stds = t[f"{c.key}:std"].to_numpy(dtype=float) * scale
    marks = _marks(values, metric.split("/")[0] in LOWER_IS_BETTER)
    return [Cell("metric", v, s, m) for v, s, m in zip(values, stds, marks, strict=True)]


def layout(
    summary: pd.DataFrame, per_class: str | None = None, metrics: Sequence[str] | None = None
) -> list[Layout]:
    """One :class:`Layout` per section of a summary table; ``per_class``: the per-class metric
    (default: the section's, :func:`~bench.results.schema.per_class_metric`); ``metrics``: the mean
    columns (:func:`check_metrics`)."""
    out = []
    for key, t in sections(summary):
        pc = per_class or per_class_metric(key[2])
        cols = _columns(t, pc, metrics)
        by_col = [_cells(t, c) for c in cols]
        labels = [r["loss"] + (f" ({r['variant']})" if r["variant"] else "") for _, r in t.iterrows()]
        rows = [
            Row(cat, label, tuple(col[i] for col in by_col))
            for i, (cat, label) in enumerate(zip(t["category"], labels, strict=True))
        ]
        title = f"{section_title(key)} — per-class {SCORES[pc]}, mean ± std over seeds"
        out.append(Layout(title, slug(key), cols, rows))
    return out


def to_markdown(layouts: Sequence[Layout]) -> str:
    """Markdown: one ``###`` section per layout; best **bold**, second <u>underlined</u>."""
    style = {0: "{}", 1: "**{}**", 2: "<u>{}</u>"}
    parts = []
    for s in layouts:
        header = ["category", "loss", *(c.label for c in s.columns)]
        lines = [f"### {s.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cat, rows in s.groups():
            for j, row in enumerate(rows):
                cells = [cat if j == 0 else "", row.label, *(style[c.mark].format(c.text) for c in row.cells)]
                lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
}
_TEX_SYMBOLS = {
    "±": r"$\pm$",
    "–": "--",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "Δ": r"$\Delta$",
    "·": r"$\cdot$",
    "—": "---",
}


def _tex(text: str) -> str:
    text = "".join(_TEX.get(ch, ch) for ch in text)
    return "".join(_TEX_SYMBOLS.get(ch, ch) for ch in text)


def to_latex(layouts: Sequence[Layout]) -> str:
    """LaTeX (booktabs): one ``tabular`` per layout; best ``\\textbf``, second ``\\underline``."""
    style = {0: "{}", 1: r"\textbf{{{}}}", 2: r"\underline{{{}}}"}
    parts = []
    for s in layouts:
        lines = [
            f"% {_tex(s.title)}",
            r"\begin{tabular}{ll" + "r" * len(s.columns) + "}",
            r"\toprule",
            " & ".join(_tex(h) for h in ["category", "loss", *(c.label for c in s.columns)]) + r" \\",
        ]
        for cat, rows in s.groups():
            lines.append(r"\midrule")
            for j, row in enumerate(rows):
                cells = [_tex(cat) if j == 0 else "", _tex(row.label)]
                cells += [style[c.mark].format(_tex(c.text)) for c in row.cells]
                lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_html(layouts: Sequence[Layout]) -> str:
    """A standalone HTML page: one table per layout, categories as row groups; best <b>, second <u>."""
    style = {0: "{}", 1: "<b>{}</b>", 2: "<u>{}</u>"}
    body = []
    for s in layouts:
        head = "".join(
            f"<th>{html.escape(h)}</th>" for h in ["category", "loss", *(c.label for c in s.columns)]
        )
        rows = []
        for cat, group in s.groups():
            for j, row in enumerate(group):
                first = f'<th rowspan="{len(group)}">{html.escape(cat)}</th>' if j == 0 else ""
                cells = f"<td>{html.escape(row.label)}</td>" + "".join(
                    f"<td>{style[c.mark].format(html.escape(c.text))}</td>" for c in row.cells
                )
                rows.append(f"<tr>{first}{cells}</tr>")
        body.append(
            f"<h3>{html.escape(s.title)}</h3>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(rows)
            + "\n</tbody>\n</table>"
        )
    css = (
        "table{border-collapse:collapse} td,th{padding:2px 8px;border-bottom:1px solid #ccc} "
        "td{text-align:right}"
    )
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>segloss-bench</title>'
        f"<style>{css}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def to_csv(layouts: Sequence[Layout]) -> str:
    """CSV of the rendered tables: one line per row of every layout (``table`` = its title), the
    numbers in displayed units: a metric column gives ``<label>`` and ``<label> std``, a paper or Δ
    column ``<metric label> paper`` / ``<metric label> Δ``; columns a section lacks are empty."""
    records = []
    for s in layouts:
        names, parent = [], ""
        for c in s.columns:
            parent = c.label if c.kind == "metric" else parent
            names.append(c.label if c.kind in ("metric", "text") else f"{parent} {c.label}")
        for row in s.rows:
            rec: dict[str, object] = {"table": s.title, "category": row.category, "loss": row.label}
            for name, c in zip(names, row.cells, strict=True):
                rec[name] = c.note if c.kind == "text" else c.value
                if c.kind == "metric":
                    rec[f"{name} std"] = c.std
            records.append(rec)
    buf = io.StringIO()
    pd.DataFrame(records).to_csv(buf, index=False)
    return buf.getvalue()


def write_tables(summary: pd.DataFrame, out: Path, name: str, metrics: Sequence[str] | None = None) -> str:
    """``<name>.md/.tex/.html`` and ``<name>_shown.csv`` (the rendered table; ``metrics``: its mean
    columns) and ``<name>.csv`` (the summary table itself: every metric, record units) in ``out``;
    returns the Markdown."""
    layouts = layout(summary, metrics=metrics)
    md = to_markdown(layouts)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(to_latex(layouts))
    (out / f"{name}.html").write_text(to_html(layouts))
    (out / f"{name}_shown.csv").write_text(to_csv(layouts))
    summary.to_csv(out / f"{name}.csv", index=False)
    return md
