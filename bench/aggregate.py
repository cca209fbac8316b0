"""Turn run records into survey-style tables.

``python -m bench.aggregate outputs/demo [more dirs or record.json files] --out results/demo``

:func:`load_records` reads every ``record.json`` below the given paths into one row per run;
:func:`summary_table` groups runs by (data, model, loss) and reports mean ± std over seeds of the
per-class DSC, mean DSC, mean HD95 and mean IoU, with the number of seeds and of failed or
unfinished runs (never silently dropped). DSC and IoU are shown in %, HD95 in the record's units.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .record import RECORD

KEYS = ["data", "model", "loss"]
MEANS = {"dsc": "DSC", "hd95": "HD95", "iou": "IoU"}


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


def load_records(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: identity, status, mean metrics, per-class ``dsc/<class>`` etc., counts."""
    rows = []
    for f in _record_files(paths):
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f} is not valid JSON ({e}); delete it or re-run that run") from None
        m = rec.get("metrics") or {}
        row = {
            "run": rec.get("name", f.parent.name),
            "run_dir": str(f.parent),
            "status": rec.get("status"),
            "loss": rec.get("loss"),
            "data": rec.get("data"),
            "model": rec.get("model"),
            "seed": rec.get("seed"),
            "protocol": m.get("protocol"),
            "units": m.get("units"),
            "error": rec.get("error"),
        }
        for key in MEANS:
            row[key] = (m.get("mean") or {}).get(key)
        for cls, vals in (m.get("per_class") or {}).items():
            for key in MEANS:
                row[f"{key}/{cls}"] = vals.get(key)
        empty = m.get("empty") or {}
        row["excluded"] = empty.get("excluded")
        row["penalised"] = empty.get("penalised")
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        raise ValueError("no run records found")
    value_cols = [c for c in df.columns if c in MEANS or "/" in c]
    df[value_cols] = df[value_cols].apply(pd.to_numeric, errors="coerce")
    return df


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (data, model, loss) of the completed runs.

    Columns: ``<metric>`` and ``<metric>:std`` for each per-class DSC and the mean DSC/HD95/IoU,
    ``seeds`` (completed runs), ``failed`` and ``unfinished`` (other statuses), ``units``.
    """
    per_class = [c for c in df.columns if c.startswith("dsc/")]
    metrics = per_class + list(MEANS)
    out = []
    for key, group in df.groupby(KEYS, sort=True, dropna=False):
        done = group[group["status"] == "completed"]
        row = dict(zip(KEYS, key, strict=True))
        for col in metrics:
            vals = done[col].dropna().to_numpy(dtype=float)
            row[col] = vals.mean() if len(vals) else np.nan
            row[f"{col}:std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
        row["seeds"] = len(done)
        row["failed"] = int((group["status"] == "failed").sum())
        row["unfinished"] = int((~group["status"].isin(["completed", "failed"])).sum())
        row["units"] = ",".join(sorted(set(done["units"].dropna())))
        out.append(row)
    return pd.DataFrame(out)


def _fmt(mean: float, std: float, scale: float) -> str:
    if np.isnan(mean):
        return "–"
    s = f"{mean * scale:.2f}"
    return s if np.isnan(std) else f"{s} ± {std * scale:.2f}"


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown: one section per (data, model); rows = losses; DSC/IoU in %, HD95 in its units."""
    parts = []
    for (data, model), t in table.groupby(["data", "model"], sort=True, dropna=False):
        classes = [c for c in t.columns if c.startswith("dsc/") and not c.endswith(":std")]
        units = ",".join(sorted({u for u in t["units"] if u})) or "?"
        header = [
            "loss",
            *(c.split("/", 1)[1] for c in classes),
            "mean DSC (%)",
            f"mean HD95 ({units})",
            "mIoU (%)",
            "seeds",
        ]
        lines = [f"### {data} · {model}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, r in t.iterrows():
            cells = [str(r["loss"])]
            cells += [_fmt(r[c], r[f"{c}:std"], 100) for c in classes]
            cells += [
                _fmt(r["dsc"], r["dsc:std"], 100),
                _fmt(r["hd95"], r["hd95:std"], 1),
                _fmt(r["iou"], r["iou:std"], 100),
            ]
            note = f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
            note += f" ({r['unfinished']} unfinished)" if r["unfinished"] else ""
            lines.append("| " + " | ".join([*cells, note]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.aggregate", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="run dirs, sweep dirs or record.json files")
    ap.add_argument("--out", type=Path, help="folder for <name>.md and <name>.csv")
    ap.add_argument("--name", default="table", help="file stem of the outputs (default: table)")
    args = ap.parse_args(argv)
    table = summary_table(load_records(args.paths))
    md = to_markdown(table)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(md)
        table.to_csv(args.out / f"{args.name}.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
