"""Turn run records into survey-style tables, statistics and plots.

    python -m bench.aggregate outputs/demo [more dirs or record.json files] --out results/demo
    python -m bench.aggregate --wandb ENTITY/PROJECT --out results/wandb
    python -m bench.aggregate outputs/paper_synapse --out results/synapse --baseline ce --by-size \\
        --paper results/paper/survey_tables.csv

:func:`load_records` (or :func:`load_wandb`) reads runs into one row each; :func:`summary_table`
groups them by section (experiment ``name``, ``data``, evaluation ``protocol``, ``model``) and row
(loss ``category`` from the registry, ``loss``, ``variant`` = its hyper-parameters that differ from
the registry defaults). A row is one config: runs are grouped by their fingerprint without the seed
(``bench.identity``), so runs of one loss whose configs differ in any other key (lr, steps,
schedule, data options…) are separate rows, never averaged — the keys that tell them apart are
added to their ``variant`` label (``trainer.optimizer.lr=0.05``). Each row reports mean ± std over
seeds (sample std, ddof=1) of every per-class and mean metric, with counts of completed
(``seeds``: distinct seeds; a seed run twice counts once, its latest record), ``failed``,
``unfinished`` and ``missing`` runs — a missing run is a seed that other rows of the section have
and this row lacks — and the
mean per completed run of the ``excluded``/``penalised`` empty (case, class) pairs. Nothing is
dropped. Values stay in record units (DSC/IoU fractions, HD95 in the record's ``units``);
:func:`to_markdown`, :func:`to_latex` and :func:`to_html` show DSC/IoU in % and mark per section the
best value of each metric column **bold** and the second best underlined (HD95: lower is better;
values compared at the printed precision; bold needs two distinct values, underline three).
Per-class columns are DSC, or IoU under the ``cityscapes`` protocol (dataset-level mIoU). The mean
columns are DSC, HD95 and mIoU (the paper form) unless ``metrics`` (``--metrics``) selects others from
:data:`HEADLINE`: NSD, ASSD (lower is better) and Boundary IoU are in every summary and CSV.
:func:`load_paper` + :func:`add_paper` add the survey's reported values and our difference to them.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import losses
from datasets.synthia import EVAL_SUBSETS as SYNTHIA_SUBSETS
from datasets.synthia import SynthiaDataset

from .identity import NON_IDENTITY, fingerprint, identity
from .record import RECORD

SECTION = ["name", "data", "protocol", "model"]
ROW = ["category", "loss", "variant"]
KEYS = SECTION + ROW
#: the per-class and mean scores of the paper form (and of the statistics by default)
MEANS = {"dsc": "DSC", "hd95": "HD95", "iou": "IoU"}
#: every per-class and mean score a record may carry (``bench.protocols.SCORES``)
SCORES = {**MEANS, "nsd": "NSD", "assd": "ASSD", "biou": "Boundary IoU"}
#: class subsets whose mean IoU is reported per dataset (Synthia→Cityscapes: mIoU16, mIoU13)
SUBSETS = {
    "synthia": {
        key.lower(): [SynthiaDataset.class_names[t] for t in ids] for key, ids in SYNTHIA_SUBSETS.items()
    }
}
HEADLINE = {
    "dsc": "mean DSC",
    "hd95": "mean HD95",
    "iou": "mIoU",
    "miou16": "mIoU16",
    "miou13": "mIoU13",
    "nsd": "mean NSD",
    "assd": "mean ASSD",
    "biou": "mean Boundary IoU",
}
#: the mean columns of a rendered table unless others are selected (the paper form)
PAPER_FORM = ("dsc", "hd95", "iou", "miou16", "miou13")
#: mean columns shown even where a section has no value
ALWAYS = tuple(MEANS)
LOWER_IS_BETTER = ("hd95", "assd")
CATEGORY_ORDER = (*losses.CATEGORIES, "other")


# --- loading -----------------------------------------------------------------------------------------


def _record_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(p.rglob(RECORD))
        else:
            raise FileNotFoundError(f"no run record or directory at {p}")
    return files


def _read(paths: Iterable[str | Path]) -> Iterator[tuple[Path, dict]]:
    """Records below ``paths``; a run scored under several protocols yields one record per protocol."""
    for f in _record_files(paths):
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f} is not valid JSON ({e}); delete it or re-run that run") from None
        yield f, rec
        for block in rec.get("more_metrics") or []:
            yield f, {**rec, "metrics": block}


def category(loss: str) -> str:
    """The registry category of ``loss``; ``"other"`` for a name the registry does not know."""
    try:
        return losses.loss_info(loss).category
    except KeyError:
        return "other"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)


def changed_params(loss: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The hyper-parameters in ``params`` that differ from the registry defaults of ``loss``.

    File paths given where the default is None (e.g. InverseForm's ``checkpoint``) are artefacts,
    not hyper-parameters, and are left out; so are names the registry does not know.
    """
    try:
        defaults = losses.loss_info(loss).hparams
    except KeyError:
        return {}
    return {
        k: v
        for k, v in (params or {}).items()
        if v != defaults.get(k, v) and not (defaults.get(k) is None and isinstance(v, str))
    }


def variant(loss: str, params: dict[str, Any] | None) -> str:
    """``"k=v,..."`` of :func:`changed_params` (``""`` = the registry defaults)."""
    return ",".join(f"{k}={_short(v)}" for k, v in changed_params(loss, params).items())


def _row(rec: dict[str, Any], source: str) -> dict[str, Any]:
    """One run as a flat row (see :func:`load_records`)."""
    cfg = rec.get("config") or {}
    m = rec.get("metrics") or {}
    params = (cfg.get("loss") or {}).get("params") or {}
    loss = rec.get("loss") or ""
    row = {
        "run": rec.get("name", Path(source).name),
        "run_dir": source,
        "status": rec.get("status"),
        "name": cfg.get("name") or "",
        "data": rec.get("data") or "",
        "protocol": m.get("protocol") or (cfg.get("data") or {}).get("protocol") or "",
        "model": rec.get("model") or "",
        "category": category(loss),
        "loss": loss,
        "variant": variant(loss, params),
        "config": fingerprint(cfg, without=("seed",)),
        "seed": rec.get("seed"),
        "units": m.get("units") or "",
        "error": rec.get("error"),
        "params": params,
        "history": rec.get("history"),
        "identity": identity(cfg, (*NON_IDENTITY, "seed")),
    }
    for key in SCORES:
        row[key] = (m.get("mean") or {}).get(key)
    for cls, vals in (m.get("per_class") or {}).items():
        for key in SCORES:
            row[f"{key}/{cls}"] = vals.get(key)
    for key, classes in SUBSETS.get(row["data"], {}).items():
        ious = [row.get(f"iou/{c}") for c in classes]
        row[key] = float(np.mean(ious)) if m and all(v is not None for v in ious) else None
    empty = m.get("empty") or {}
    row["excluded"] = empty.get("excluded")
    row["penalised"] = empty.get("penalised")
    return row


def label_variants(rows: list[dict[str, Any]]) -> None:
    """Make ``variant`` tell apart the configs of one loss in one section (in place).

    Rows of one (section, loss) whose ``config`` differs get the identity keys whose values differ
    among those configs appended to their ``variant`` (``k=v``; loss hyper-parameters already shown
    are not repeated); labels that still coincide get ``config=<fingerprint>``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in (*SECTION, "loss")), []).append(row)
    for members in groups.values():
        configs = {r["config"]: r for r in members}
        if len(configs) < 2:
            continue
        idents = [r["identity"] for r in configs.values()]
        differing = sorted(
            k
            for k in set().union(*idents)
            if not k.startswith("loss.params.") and len({json.dumps(i.get(k)) for i in idents}) > 1
        )
        labels = {}
        for fp, r in configs.items():
            extra = [f"{k}={_short(r['identity'].get(k))}" for k in differing]
            labels[fp] = ",".join(p for p in (r["variant"], *extra) if p)
        taken = list(labels.values())
        for fp, label in labels.items():
            if taken.count(label) > 1:
                labels[fp] = ",".join(p for p in (label, f"config={fp[:8]}") if p)
        for r in members:
            r["variant"] = labels[r["config"]]


def _frame(rows: list[dict[str, Any]], where: str) -> pd.DataFrame:
    label_variants(rows)
    df = pd.DataFrame(rows).drop(columns="identity", errors="ignore")
    if df.empty:
        raise ValueError(f"no run records found in {where}")
    value_cols = [c for c in df.columns if is_metric(c) or c in ("excluded", "penalised")]
    df[value_cols] = df[value_cols].apply(pd.to_numeric, errors="coerce")
    return df


def load_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per ``record.json`` below ``paths`` (run dirs, sweep dirs or record files).

    Columns: ``run``, ``run_dir``, ``status``, the identity :data:`KEYS`, ``config`` (the
    fingerprint without seed, see :func:`label_variants`), ``seed``, ``units``, ``error``,
    ``params`` (loss hyper-parameters), ``history`` (training curve), the means of :data:`SCORES`
    (``dsc``, ``hd95``, ``iou``, ``nsd``, ``assd``, ``biou``; NaN where the protocol has none) +
    class-subset mIoUs, the same per class (``dsc/<class>``, ``nsd/<class>`` …), and the run's
    ``excluded``/``penalised`` empty-case counts.
    """
    paths = list(paths)
    return _frame([_row(rec, str(f.parent)) for f, rec in _read(paths)], ", ".join(map(str, paths)))


#: W&B run state → record status ("finished" without test metrics means the run failed in the loop)
_WANDB_STATES = {"failed": "failed", "crashed": "failed", "killed": "failed"}


def _wandb_record(run: Any) -> dict[str, Any]:
    """A run of the W&B public API as a record: config and the ``test/...`` summary of WandbLogger."""
    cfg, summary = dict(run.config), dict(run.summary_metrics)
    mean = {k: summary.get(f"test/{k}") for k in SCORES}
    per_class: dict[str, dict[str, Any]] = {}
    for key, value in summary.items():
        parts = key.split("/", 2)
        if len(parts) == 3 and parts[0] == "test" and parts[1] in SCORES:
            per_class.setdefault(parts[2], {})[parts[1]] = value
    done = run.state == "finished" and mean["dsc"] is not None
    status = (
        "completed"
        if done
        else _WANDB_STATES.get(run.state, "failed" if run.state == "finished" else run.state)
    )
    return {
        "name": run.name,
        "status": status,
        "loss": (cfg.get("loss") or {}).get("name"),
        "data": (cfg.get("data") or {}).get("name"),
        "model": (cfg.get("model") or {}).get("name"),
        "seed": cfg.get("seed"),
        "config": cfg,
        "metrics": {"protocol": (cfg.get("data") or {}).get("protocol"), "mean": mean, "per_class": per_class}
        if done
        else None,
    }


def load_wandb(path: str, *, api: Any = None, filters: dict[str, Any] | None = None) -> pd.DataFrame:
    """The runs of W&B project ``path`` ("entity/project") as :func:`load_records` rows.

    ``api`` defaults to ``wandb.Api()``; ``filters`` is passed to ``api.runs`` (MongoDB-style, e.g.
    ``{"group": "paper_synapse"}``). W&B holds the mean and per-class metrics, not the per-case rows,
    units, empty-case counts or history (those columns are empty).
    """
    if api is None:
        import wandb

        api = wandb.Api()
    rows = [
        _row(_wandb_record(run), getattr(run, "url", "") or run.name)
        for run in api.runs(path, filters=filters)
    ]
    return _frame(rows, f"W&B project {path}")


def load_cases(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (completed run, case, class): the identity :data:`KEYS`, ``seed``, ``case``,
    ``class`` (name), the :data:`SCORES` (NaN where the protocol has none) and ``empty`` — the
    record's ``per_case`` rows.

    Class ids map to names in the order of the record's ``per_class`` block (ascending ids).
    Empty (with these columns) when no run completed.
    """
    frames = []
    pairs = [(rec, _row(rec, str(f.parent))) for f, rec in _read(paths)]
    label_variants([row for _, row in pairs])
    for rec, row in pairs:
        m = rec.get("metrics") or {}
        if rec.get("status") != "completed" or not m.get("per_case"):
            continue
        ident = {k: v for k, v in row.items() if k in (*KEYS, "seed")}
        cases = pd.DataFrame(m["per_case"])
        ids = sorted(cases["class"].unique())
        names = dict(zip(ids, m["per_class"], strict=True))
        cases["class"] = cases["class"].map(names)
        frames.append(cases.assign(**ident))
    columns = [*KEYS, "seed", "case", "class", *SCORES, "empty"]  # a protocol's absent scores are NaN
    out = (
        pd.concat(frames, ignore_index=True).reindex(columns=columns)
        if frames
        else pd.DataFrame(columns=columns)
    )
    return out.astype(dict.fromkeys(SCORES, float))


# --- the summary table ------------------------------------------------------------------------------


def is_metric(col: str) -> bool:
    """True for mean, subset and per-class metric columns (``dsc``, ``miou16``, ``iou/road`` …)."""
    return col in HEADLINE or ("/" in col and ":" not in col and col.split("/", 1)[0] in SCORES)


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
    completed run) and ``units``; with ``paper`` (see :func:`load_paper`) also ``paper:<metric>`` and
    ``delta:<metric>``. Rows are ordered by section, category (pixel, region, boundary,
    combination, other), loss and variant.
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


# --- the survey's reported numbers ------------------------------------------------------------------

PAPER_COLUMNS = ["dataset", "protocol", "model", "loss", "metric", "class", "value", "source"]
PAPER_METRICS = {
    "dsc": "dsc",
    "hd95": "hd95",
    "iou": "iou",
    "miou": "iou",
    "miou16": "miou16",
    "miou13": "miou13",
}


def load_paper(path: str | Path) -> pd.DataFrame:
    """The survey's reported values (``results/paper/README.md``): one row per number, with ``key``
    (our metric column, e.g. ``dsc`` or ``dsc/liver``) and ``ref`` (the value in record units:
    DSC/IoU as fractions). Empty ``protocol``/``model`` cells match any protocol/model.
    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in PAPER_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {','.join(PAPER_COLUMNS)}")
    keys, refs = [], []
    for line, r in enumerate(df.to_dict("records"), start=2):
        metric = PAPER_METRICS.get(r["metric"].strip().lower())
        if metric is None:
            raise ValueError(f"{path}:{line}: metric {r['metric']!r} is not one of {sorted(PAPER_METRICS)}")
        if r["dataset"] == "" or r["loss"] == "":
            raise ValueError(f"{path}:{line}: dataset and loss must be filled (registry names)")
        try:
            value = float(r["value"])
        except ValueError:
            raise ValueError(f"{path}:{line}: value {r['value']!r} is not a number") from None
        cls = r["class"].strip()
        if cls not in ("", "mean") and metric not in MEANS:
            raise ValueError(f"{path}:{line}: {r['metric']} is a mean over classes; leave class empty")
        keys.append(metric if cls in ("", "mean") else f"{metric}/{cls}")
        refs.append(value if metric in LOWER_IS_BETTER else value / 100)
    return df.assign(key=keys, ref=refs)


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


# --- rendering --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    label: str
    key: str
    scale: float
    kind: str = "metric"  # metric | paper | delta


@dataclass
class Section:
    """One rendered table: a title, the column headers after ``loss``, and per category its rows of
    ``(text, mark)`` cells (mark 1 = best, 2 = second best)."""

    title: str
    slug: str
    header: list[str]
    groups: list[tuple[str, list[list[tuple[str, int]]]]]


def display_scale(key: str) -> float:
    """Factor from record units to displayed units: 100 for DSC/IoU (%), 1 for HD95."""
    return 1.0 if key.split("/", 1)[0] in LOWER_IS_BETTER else 100.0


def per_class_metric(protocol: str) -> str:
    """The per-class column metric of a section: IoU for the ``cityscapes`` protocol, else DSC."""
    return "iou" if protocol == "cityscapes" else "dsc"


def sections(summary: pd.DataFrame) -> Iterator[tuple[tuple[str, ...], pd.DataFrame]]:
    """The (name, data, protocol, model) sections of a summary table, in table order."""
    yield from summary.groupby(SECTION, sort=False, dropna=False)


def section_title(key: tuple[str, ...]) -> str:
    name, data, protocol, model = key
    return " · ".join(p for p in (name, data, f"{protocol} protocol" if protocol else "", model) if p)


def slug(key: tuple[str, ...]) -> str:
    return re.sub(r"[^\w.-]+", "-", "_".join(p for p in key if p)).strip("-") or "table"


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


def _columns(t: pd.DataFrame, per_class: str, metrics: Sequence[str] | None = None) -> list[Column]:
    units = ",".join(sorted({u for u in t["units"] if u})) or "?"
    classes = [c for c in t.columns if c.startswith(per_class + "/") and is_metric(c) and t[c].notna().any()]
    metric_cols = [Column(c.split("/", 1)[1], c, display_scale(c)) for c in classes]
    for key in check_metrics(metrics):
        label = HEADLINE[key]
        if key in ALWAYS or (key in t and t[key].notna().any()):
            unit = units if key in LOWER_IS_BETTER else "%"
            arrow = "↓" if key in LOWER_IS_BETTER else "↑"
            metric_cols.append(Column(f"{label} ({unit}) {arrow}", key, display_scale(key)))
    cols = []
    for c in metric_cols:
        cols.append(c)
        if f"paper:{c.key}" in t and t[f"paper:{c.key}"].notna().any():
            cols += [
                Column("paper", f"paper:{c.key}", c.scale, "paper"),
                Column("Δ", f"delta:{c.key}", c.scale, "delta"),
            ]
    return cols


def _marks(values: pd.Series, lower: bool) -> list[int]:
    shown = [None if math.isnan(v) else round(v, 2) for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=not lower)
    best = distinct[0] if len(distinct) >= 2 else None
    second = distinct[1] if len(distinct) >= 3 else None
    return [1 if v is not None and v == best else 2 if v is not None and v == second else 0 for v in shown]


def _cell(mean: float, std: float, scale: float) -> str:
    if np.isnan(mean):
        return "–"
    s = f"{mean * scale:.2f}"
    return s if np.isnan(std) else f"{s} ± {std * scale:.2f}"


def _runs_note(r: pd.Series) -> str:
    note = f"{r['seeds']}"
    for key in ("failed", "unfinished", "missing"):
        note += f" ({r[key]} {key})" if r[key] else ""
    return note


def layout(
    summary: pd.DataFrame, per_class: str | None = None, metrics: Sequence[str] | None = None
) -> list[Section]:
    """The sections of a summary table as cells, with best/second-best marks per metric column;
    ``metrics``: the mean columns (:func:`check_metrics`)."""
    out = []
    for key, t in sections(summary):
        cols = _columns(t, per_class or per_class_metric(key[2]), metrics)
        cells = {c.key: [] for c in cols}
        for c in cols:
            values = t[c.key].to_numpy(dtype=float)
            if c.kind == "metric":
                stds = t[f"{c.key}:std"].to_numpy(dtype=float)
                marks = _marks(pd.Series(values * c.scale), c.key.split("/")[0] in LOWER_IS_BETTER)
                cells[c.key] = [
                    (_cell(v, s, c.scale), m) for v, s, m in zip(values, stds, marks, strict=True)
                ]
            else:
                fmt = "{:+.2f}" if c.kind == "delta" else "{:.2f}"
                cells[c.key] = [("–" if np.isnan(v) else fmt.format(v * c.scale), 0) for v in values]
        groups: list[tuple[str, list[list[tuple[str, int]]]]] = []
        for i, (_, r) in enumerate(t.iterrows()):
            label = r["loss"] + (f" ({r['variant']})" if r["variant"] else "")
            empty = "–" if np.isnan(r["excluded"]) else f"{r['excluded']:g}/{r['penalised']:g}"
            row = [(label, 0), *(cells[c.key][i] for c in cols), (_runs_note(r), 0), (empty, 0)]
            if not groups or groups[-1][0] != r["category"]:
                groups.append((r["category"], []))
            groups[-1][1].append(row)
        metric_name = SCORES[per_class or per_class_metric(key[2])]
        out.append(
            Section(
                title=f"{section_title(key)} — per-class {metric_name}, mean ± std over seeds",
                slug=slug(key),
                header=[c.label for c in cols] + ["seeds", "empty excl./pen."],
                groups=groups,
            )
        )
    return out


def to_markdown(
    summary: pd.DataFrame, per_class: str | None = None, metrics: Sequence[str] | None = None
) -> str:
    """Markdown: one ``###`` section per (name, data, protocol, model); best **bold**, second <u>u</u>."""
    style = {0: "{}", 1: "**{}**", 2: "<u>{}</u>"}
    parts = []
    for s in layout(summary, per_class, metrics):
        header = ["category", "loss", *s.header]
        lines = [f"### {s.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cat, rows in s.groups:
            for j, row in enumerate(rows):
                cells = [cat if j == 0 else ""] + [style[m].format(text) for text, m in row]
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


def to_latex(
    summary: pd.DataFrame, per_class: str | None = None, metrics: Sequence[str] | None = None
) -> str:
    """LaTeX (booktabs): one ``tabular`` per section; best ``\\textbf``, second ``\\underline``."""
    style = {0: "{}", 1: r"\textbf{{{}}}", 2: r"\underline{{{}}}"}
    parts = []
    for s in layout(summary, per_class, metrics):
        lines = [
            f"% {_tex(s.title)}",
            r"\begin{tabular}{ll" + "r" * len(s.header) + "}",
            r"\toprule",
            " & ".join(_tex(h) for h in ["category", "loss", *s.header]) + r" \\",
        ]
        for cat, rows in s.groups:
            lines.append(r"\midrule")
            for j, row in enumerate(rows):
                cells = [_tex(cat) if j == 0 else ""] + [style[m].format(_tex(text)) for text, m in row]
                lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_html(summary: pd.DataFrame, per_class: str | None = None, metrics: Sequence[str] | None = None) -> str:
    """A standalone HTML page: one table per section, categories as row groups; best <b>, second <u>."""
    style = {0: "{}", 1: "<b>{}</b>", 2: "<u>{}</u>"}
    body = []
    for s in layout(summary, per_class, metrics):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in ["category", "loss", *s.header])
        rows = []
        for cat, group in s.groups:
            for j, row in enumerate(group):
                first = f'<th rowspan="{len(group)}">{html.escape(cat)}</th>' if j == 0 else ""
                cells = "".join(f"<td>{style[m].format(html.escape(text))}</td>" for text, m in row)
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
                "hyper-parameters": ", ".join(f"{k}={_short(v)}" for k, v in info.hparams.items()) or "–",
                "original": info.original,
            }
        )
    df = pd.DataFrame(rows)
    return (
        df.assign(_r=df["category"].map(CATEGORY_ORDER.index)).sort_values(["_r", "loss"]).drop(columns="_r")
    )


# --- command line -----------------------------------------------------------------------------------


def write_tables(summary: pd.DataFrame, out: Path, name: str, metrics: Sequence[str] | None = None) -> str:
    """``<name>.md/.tex/.html/.csv`` in ``out`` (``metrics``: the rendered mean columns; the CSV
    has all); returns the Markdown."""
    md = to_markdown(summary, metrics=metrics)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(to_latex(summary, metrics=metrics))
    (out / f"{name}.html").write_text(to_html(summary, metrics=metrics))
    summary.to_csv(out / f"{name}.csv", index=False)
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.aggregate", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", help="run dirs, sweep dirs or record.json files")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the runs of this W&B project")
    ap.add_argument("--out", type=Path, help="folder for the tables (md, tex, html, csv) and plots")
    ap.add_argument("--name", default="table", help="file stem of the main table (default: table)")
    ap.add_argument("--paper", type=Path, help="CSV of the survey's values (results/paper/README.md)")
    ap.add_argument("--baseline", help="loss to compare every other loss with (Wilcoxon + Holm)")
    ap.add_argument("--by-size", action="store_true", help="DSC by object size (reads the test split)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG/PDF plots")
    ap.add_argument(
        "--metrics",
        type=lambda v: [m.strip() for m in v.split(",") if m.strip()],
        help=f"mean columns of the tables, comma-separated from {','.join(HEADLINE)}, or 'all' "
        "(default: dsc,hd95,iou and the mIoU subsets, the paper form)",
    )
    args = ap.parse_args(argv)
    try:
        check_metrics(args.metrics)
    except ValueError as e:
        ap.error(str(e))
    if not args.paths and not args.wandb:
        ap.error("give run/sweep directories or --wandb ENTITY/PROJECT")
    if not args.paths and (args.baseline or args.by_size):
        ap.error("--baseline and --by-size need run records (W&B holds no per-case rows): give run paths")
    frames = [load_records(args.paths)] if args.paths else []
    frames += [load_wandb(args.wandb)] if args.wandb else []
    runs = pd.concat(frames, ignore_index=True)
    summary = summary_table(runs, load_paper(args.paper) if args.paper else None)
    md = to_markdown(summary, metrics=args.metrics)
    print(md)
    if args.out:
        from . import plots, stats

        args.out.mkdir(parents=True, exist_ok=True)
        write_tables(summary, args.out, args.name, args.metrics)
        runs.drop(columns=["params", "history"]).to_csv(args.out / "runs.csv", index=False)
        tables = {"losses": loss_table(), "ranks": stats.rank_table(summary)}
        if args.paths:
            cases = load_cases(args.paths)
            scored = [m for m in SCORES if cases[m].notna().any()] or ["dsc"]  # what the protocols report
            tables["ci"] = stats.ci_table(cases, metrics=scored)
            if args.baseline:
                tables["wilcoxon"] = stats.paired_tests(cases, baseline=args.baseline, metrics=scored)
            if args.by_size:
                tables["sizes"] = stats.size_table(summary, stats.sizes_from_runs(runs))
        for stem, df in tables.items():
            df.to_csv(args.out / f"{stem}.csv", index=False)
            (args.out / f"{stem}.md").write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")
        if not args.no_plots:
            plots.plot_all(summary, runs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
