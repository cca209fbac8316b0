"""Turn run records into survey-style tables, statistics and plots.

    python -m bench.results outputs/demo [more dirs or record.json files] --out results/demo
    python -m bench.results --wandb ENTITY/PROJECT --out results/wandb
    python -m bench.results outputs/paper_synapse --out results/synapse --baseline ce --by-size \\
        --paper results/paper/survey_tables.csv

Prints the Markdown table; with ``--out`` writes the table (``table.md/.tex/.html``,
``table_shown.csv``), the summary (``table.csv``), the runs (``runs.csv``), the loss table, ranks,
bootstrap intervals, and with ``--baseline`` / ``--by-size`` paired tests and the object-size
analysis, then the plots.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from . import plots, stats
from .load import load_cases, load_paper, load_records, load_wandb
from .render import check_metrics, layout, to_markdown, write_tables
from .schema import HEADLINE, SCORES
from .table import loss_table, summary_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", help="run dirs, sweep dirs or record.json files")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the runs of this W&B project")
    ap.add_argument("--out", type=Path, help="folder for the tables (md, tex, html, csv) and plots")
    ap.add_argument("--name", default="table", help="file stem of the main table (default: table)")
    ap.add_argument("--paper", type=Path, help="CSV of the survey's values (results/paper/README.md)")
    ap.add_argument("--baseline", help="loss to compare every other loss with (Wilcoxon + Holm)")
    ap.add_argument(
        "--by-size", action="store_true", help="DSC by object size (the records' ground-truth sizes)"
    )
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
    print(to_markdown(layout(summary, metrics=args.metrics)))
    if args.out:
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
                tables["sizes"] = stats.size_table(summary, stats.section_sizes(cases))
        for stem, df in tables.items():
            df.to_csv(args.out / f"{stem}.csv", index=False)
            (args.out / f"{stem}.md").write_text(df.to_markdown(index=False, floatfmt=".4g") + "\n")
        if not args.no_plots:
            plots.plot_all(summary, runs, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
