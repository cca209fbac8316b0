"""Runs into rows: run records, W&B runs and the survey's reported values.

:func:`load_records` (or :func:`load_wandb`) reads runs into one row per (run, evaluation protocol):
a run scored under several protocols (``data.protocol`` a list) gives one row per metrics block
(:func:`bench.results.schema.metric_blocks`), and a run without metrics (failed, unfinished) one
row per protocol of its config, so that it counts in each protocol's section. A row carries the
table keys (:data:`~bench.results.schema.KEYS`): ``category`` from the loss registry, ``variant``
= the loss's hyper-parameters that differ from the registry defaults, plus, where configs of one
loss in one section differ in other keys (lr, steps, data options…), those keys
(:func:`label_variants`), so that every row of a table is one config. Values stay in record units
(DSC/IoU fractions, HD95 in the record's ``units``). Everything comes from the record: class-subset
columns from ``metrics.subsets``, ground-truth sizes from the ``gt_size`` of the per-case rows.
:func:`load_paper` reads the survey's reported values (``results/paper/README.md``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

import losses

from ..identity import NON_IDENTITY, fingerprint, identity
from ..record import RECORD
from .schema import (
    GT_SIZE,
    KEYS,
    LOWER_IS_BETTER,
    MEANS,
    MORE_METRICS,
    SCORES,
    SECTION,
    SUBSET_SCORE,
    SUBSETS,
    SUBSETS_FIELD,
    is_metric,
    metric_blocks,
    wandb_block,
    wandb_prefix,
)

# --- run records ------------------------------------------------------------------------------------


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
    for f in _record_files(paths):
        try:
            yield f, json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f} is not valid JSON ({e}); delete it or re-run that run") from None


def protocols(config: dict[str, Any]) -> list[str]:
    """The evaluation protocols of a run's config (``data.protocol``: a name or a list of names)."""
    p = (config.get("data") or {}).get("protocol") or ""
    return [str(x) for x in p] if isinstance(p, list | tuple) else [str(p)]


def per_protocol(rec: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """``(protocol, metrics block)`` of each protocol a run is counted under: its metrics blocks,
    or, for a run without metrics, every protocol of its config with no block."""
    blocks = metric_blocks(rec)
    if blocks:
        first = protocols(rec.get("config") or {})[0]
        return [(b.get("protocol") or first, b) for b in blocks]
    return [(p, None) for p in protocols(rec.get("config") or {})]


# --- loss metadata ----------------------------------------------------------------------------------


def category(loss: str) -> str:
    """The registry category of ``loss``; ``"other"`` for a name the registry does not know."""
    try:
        return losses.loss_info(loss).category
    except KeyError:
        return "other"


def short(value: Any) -> str:
    """A hyper-parameter value as shown in labels: ``0.05``, ``[1,2]``, ``{"a":1}``."""
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
    return ",".join(f"{k}={short(v)}" for k, v in changed_params(loss, params).items())


# --- rows -------------------------------------------------------------------------------------------


def _subsets(block: dict[str, Any], source: str) -> dict[str, Any]:
    """The subset columns of a metrics block: ``<subset>`` = the subset's mean IoU."""
    out = {}
    for name, sub in (block.get(SUBSETS_FIELD) or {}).items():
        if name not in SUBSETS:
            raise ValueError(
                f"{source}: metrics.{SUBSETS_FIELD} has subset {name!r}, which tables do not know; "
                f"add it to SUBSETS in bench/results/schema.py (known: {', '.join(SUBSETS)})"
            )
        out[name] = sub.get(SUBSET_SCORE)
    return out


def _row(rec: dict[str, Any], protocol: str, m: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """One run under one protocol as a flat row (see :func:`load_records`)."""
    cfg = rec.get("config") or {}
    m = m or {}
    params = (cfg.get("loss") or {}).get("params") or {}
    loss = rec.get("loss") or ""
    row = {
        "run": rec.get("name", Path(source).name),
        "run_dir": source,
        "status": rec.get("status"),
        "name": cfg.get("name") or "",
        "data": rec.get("data") or "",
        "protocol": protocol,
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
    row |= _subsets(m, source)
    empty = m.get("empty") or {}
    row["excluded"] = empty.get("excluded")
    row["penalised"] = empty.get("penalised")
    return row


def _rows(rec: dict[str, Any], source: str) -> list[dict[str, Any]]:
    return [_row(rec, p, m, source) for p, m in per_protocol(rec)]


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
            extra = [f"{k}={short(r['identity'].get(k))}" for k in differing]
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
    """One row per (``record.json`` below ``paths``, protocol); ``paths``: run dirs, sweep dirs or
    record files.

    Columns: ``run``, ``run_dir``, ``status``, the identity :data:`KEYS`, ``config`` (the
    fingerprint without seed, see :func:`label_variants`), ``seed``, ``units``, ``error``,
    ``params`` (loss hyper-parameters), ``history`` (training curve), the means of :data:`SCORES`
    (``dsc``, ``hd95``, ``iou``, ``nsd``, ``assd``, ``biou``; NaN where the protocol has none), the
    record's class-subset mIoUs (``miou16``, ``miou13``; absent when no record has subsets), the
    same per class (``dsc/<class>``, ``nsd/<class>`` …), and the run's ``excluded``/``penalised``
    empty-case counts.
    """
    paths = list(paths)
    rows = [row for f, rec in _read(paths) for row in _rows(rec, str(f.parent))]
    return _frame(rows, ", ".join(map(str, paths)))


def load_cases(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (completed run, protocol, case, class): the identity :data:`KEYS`, ``seed``,
    ``run_dir``, ``case``, ``class`` (name), the :data:`SCORES` (NaN where the protocol has none),
    ``empty`` and ``gt_size`` (NaN in records written before the evaluator recorded it) — the
    record's ``per_case`` rows.

    Class ids map to names in the order of the record's ``per_class`` block (ascending ids).
    Empty (with these columns) when no run completed.
    """
    frames = []
    pairs = [
        (m, row)
        for f, rec in _read(paths)
        for (_, m), row in zip(per_protocol(rec), _rows(rec, str(f.parent)), strict=True)
    ]
    label_variants([row for _, row in pairs])  # over every run, as load_records labels them
    for m, row in pairs:
        if row["status"] != "completed" or not m or not m.get("per_case"):
            continue
        ident = {k: v for k, v in row.items() if k in (*KEYS, "seed", "run_dir")}
        cases = pd.DataFrame(m["per_case"])
        ids = sorted(cases["class"].unique())
        names = dict(zip(ids, m["per_class"], strict=True))
        cases["class"] = cases["class"].map(names)
        frames.append(cases.assign(**ident))
    columns = [*KEYS, "seed", "run_dir", "case", "class", *SCORES, "empty", GT_SIZE]
    out = (
        pd.concat(frames, ignore_index=True).reindex(columns=columns)  # absent scores are NaN
        if frames
        else pd.DataFrame(columns=columns)
    )
    return out.astype(dict.fromkeys([*SCORES, GT_SIZE], float))


# --- W&B --------------------------------------------------------------------------------------------

#: W&B run state → record status ("finished" without test metrics means the run failed in the loop)
_WANDB_STATES = {"failed": "failed", "crashed": "failed", "killed": "failed"}


def wandb_record(run: Any) -> dict[str, Any]:
    """A run of the W&B public API as a record: its config and the metrics blocks that
    ``bench.logger.WandbLogger`` wrote (:func:`bench.results.schema.wandb_summary`): the first
    protocol's as ``metrics``, the others' found in the summary as ``more_metrics``."""
    cfg, summary = dict(run.config), dict(run.summary_metrics)
    first, *others = protocols(cfg)
    metrics = wandb_block(summary, wandb_prefix())
    done = run.state == "finished" and metrics is not None
    status = (
        "completed"
        if done
        else _WANDB_STATES.get(run.state, "failed" if run.state == "finished" else run.state)
    )
    more = [
        {**block, "protocol": p}
        for p in others
        if (block := wandb_block(summary, wandb_prefix(p))) is not None
    ]
    return {
        "name": run.name,
        "status": status,
        "loss": (cfg.get("loss") or {}).get("name"),
        "data": (cfg.get("data") or {}).get("name"),
        "model": (cfg.get("model") or {}).get("name"),
        "seed": cfg.get("seed"),
        "config": cfg,
        "metrics": {**metrics, "protocol": first} if done else None,
        **({MORE_METRICS: more} if done and more else {}),
    }


def load_wandb(path: str, *, api: Any = None, filters: dict[str, Any] | None = None) -> pd.DataFrame:
    """The runs of W&B project ``path`` ("entity/project") as :func:`load_records` rows: one per
    (run, protocol), as for records.

    ``api`` defaults to ``wandb.Api()``; ``filters`` is passed to ``api.runs`` (MongoDB-style, e.g.
    ``{"group": "paper_synapse"}``). W&B holds the mean, per-class and subset metrics, not the
    per-case rows, units, empty-case counts or history (those columns are empty).
    """
    if api is None:
        import wandb

        api = wandb.Api()
    rows = [
        row
        for run in api.runs(path, filters=filters)
        for row in _rows(wandb_record(run), getattr(run, "url", "") or run.name)
    ]
    return _frame(rows, f"W&B project {path}")


# --- the survey's reported numbers ------------------------------------------------------------------

PAPER_COLUMNS = ["dataset", "protocol", "model", "loss", "metric", "class", "value", "source"]
PAPER_METRICS = {
    "dsc": "dsc",
    "hd95": "hd95",
    "iou": "iou",
    "miou": "iou",
    **{k: k for k in SUBSETS},
}


def load_paper(path: str | Path) -> pd.DataFrame:
    """The survey's reported values (``results/paper/README.md``): its :data:`PAPER_COLUMNS`, one
    row per number, plus ``key`` (our metric column, e.g. ``dsc`` or ``dsc/liver``) and ``ref``
    (the value in record units: DSC/IoU as fractions). Empty ``protocol``/``model`` cells match any
    protocol/model.
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
