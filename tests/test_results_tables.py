"""The results package's tables from hand-made records: means, stds, seeds, failed and missing runs,
categories, variants, best/second marks (checked on the layout), one smoke test per output format,
paper columns, class subsets and W&B input (a run scored under several protocols included)."""

import csv
import io
import json
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

import losses
from bench.results.__main__ import main
from bench.results.load import PAPER_COLUMNS, load_cases, load_paper, load_records, load_wandb, variant
from bench.results.render import layout, to_csv, to_html, to_latex, to_markdown
from bench.results.schema import is_metric
from bench.results.table import add_paper, loss_table, summary_table

CLASSES = ("liver", "aorta")


def write(
    folder,
    name,
    loss,
    seed,
    status="completed",
    dsc=(0.8, 0.6),
    hd95=5.0,
    iou=0.5,
    params=None,
    sweep="sweep",
    config=None,
    gt_size=(100, 10),
):
    """A record as the runner writes it; ``gt_size``: each class's ground-truth pixels per case
    (None: a record written before the evaluator recorded sizes)."""
    metrics = None
    if status == "completed":
        metrics = {
            "protocol": "default",
            "units": "mm",
            "mean": {"dsc": float(np.mean(dsc)), "iou": iou, "hd95": hd95},
            "per_class": {c: {"dsc": d, "iou": iou, "hd95": hd95} for c, d in zip(CLASSES, dsc, strict=True)},
            "per_case": [
                {
                    "case": f"case{k}",
                    "class": c,
                    "dsc": d + 0.01 * k,
                    "iou": iou,
                    "hd95": hd95,
                    "empty": "none",
                    **({} if gt_size is None else {"gt_size": size}),
                }
                for k in range(3)
                for c, d, size in zip((1, 5), dsc, gt_size or (0, 0), strict=True)
            ],
            "empty": {"excluded": 1, "penalised": 0},
        }
    (folder / name).mkdir(parents=True)
    rec = {
        "name": name,
        "status": status,
        "loss": loss,
        "data": "synthetic",
        "model": "tiny",
        "seed": seed,
        "config": {
            "name": sweep,
            "data": {"name": "synthetic", "protocol": "default"},
            "loss": {"name": loss, "params": {**losses.loss_info(loss).hparams, **(params or {})}},
            "seed": seed,
            **(config or {}),
        },
        "metrics": metrics,
        "history": {"train": [{"step": s, "train/loss": 1.0 / s} for s in (1, 2)], "eval": []}
        if metrics
        else None,
    }
    if status == "failed":
        rec["error"] = "NonFiniteLoss: loss 'dice' became non-finite (NaN/inf) at step 3"
    (folder / name / "record.json").write_text(json.dumps(rec))


@pytest.fixture
def sweep(tmp_path):
    write(tmp_path, "ce0", "ce", 0, dsc=(0.9, 0.5), hd95=4.0)
    write(tmp_path, "ce1", "ce", 1, dsc=(0.7, 0.3), hd95=6.0)
    write(tmp_path, "dice0", "dice", 0, dsc=(0.8, 0.8), hd95=2.0)
    write(tmp_path, "dice1", "dice", 1, status="failed")
    write(tmp_path, "focal0", "focal", 0, status="running")
    return tmp_path


@pytest.fixture
def ranked(tmp_path):
    """Four losses of all categories, two seeds, one variant; clear best and second best."""
    scores = {"ce": (0.6, 8.0), "dice": (0.9, 3.0), "boundary": (0.7, 2.0), "combo": (0.8, 5.0)}
    for loss, (d, h) in scores.items():
        for seed in (0, 1):
            write(tmp_path, f"{loss}{seed}", loss, seed, dsc=(d, d - 0.2), hd95=h + seed)
    write(tmp_path, "focal_g5", "focal", 0, dsc=(0.5, 0.5), params={"gamma": 5.0})
    return tmp_path


def values(section, key):
    """Row label → (value, std, mark) of column ``key`` of a layout."""
    return {
        r.label: (
            section.cell(r.label, key).value,
            section.cell(r.label, key).std,
            section.cell(r.label, key).mark,
        )
        for r in section.rows
    }


def test_one_row_per_loss_with_means_and_stds_over_seeds(sweep):
    table = summary_table(load_records([sweep])).set_index("loss")
    assert list(table.index) == ["ce", "focal", "dice"]  # pixel before region, by name within
    assert list(table["category"]) == ["pixel", "pixel", "region"]
    assert table.loc["ce", "dsc"] == pytest.approx(0.6)
    assert table.loc["ce", "dsc:std"] == pytest.approx(np.std([0.7, 0.5], ddof=1))
    assert table.loc["ce", "dsc/liver"] == pytest.approx(0.8)
    assert table.loc["ce", "hd95"] == pytest.approx(5.0)
    assert table.loc["ce", "seeds"] == 2
    assert (table.loc["ce", "excluded"], table.loc["ce", "penalised"]) == (1, 0)


def test_failed_unfinished_and_missing_runs_are_counted_not_dropped(sweep):
    table = summary_table(load_records([sweep])).set_index("loss")
    assert (table.loc["dice", "seeds"], table.loc["dice", "failed"], table.loc["dice", "missing"]) == (
        1,
        1,
        0,
    )
    assert np.isnan(table.loc["dice", "dsc:std"])
    focal = table.loc["focal"]
    assert (focal["seeds"], focal["unfinished"], focal["missing"]) == (0, 1, 1)  # seed 1 ran for others
    (section,) = layout(table.reset_index())
    assert [r.category for r in section.rows] == ["pixel", "pixel", "region"]
    dice = dict(zip([c.key for c in section.columns], section.rows[2].cells, strict=True))
    assert section.rows[2].label == "dice"
    assert (dice["dsc/liver"].value, dice["dsc/liver"].mark) == (pytest.approx(80), 0)  # ties with ce
    assert (dice["dsc/aorta"].value, dice["dsc/aorta"].mark) == (pytest.approx(80), 1)
    assert (dice["hd95"].value, dice["hd95"].mark) == (pytest.approx(2.0), 1)
    assert np.isnan(dice["dsc"].std) and (dice["seeds"].note, dice["empty"].note) == ("1 (1 failed)", "1/0")
    assert all(np.isnan(c.value) for c in section.rows[1].cells if c.kind == "metric")
    assert section.cell("focal", "seeds").note == "0 (1 unfinished) (1 missing)"
    assert section.cell("focal", "empty").text == "–"


def test_cli_prints_and_writes_the_table_the_summary_and_the_runs(sweep, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main([str(sweep), "--out", str(out)]) == 0
    md = (out / "table.md").read_text()
    assert md.strip() in capsys.readouterr().out
    (section,) = layout(summary_table(load_records([sweep])))
    assert (
        section.title == "sweep · synthetic · default protocol · tiny — per-class DSC, mean ± std over seeds"
    )
    assert [c.label for c in section.columns] == [
        *CLASSES,
        "mean DSC (%) ↑",
        "mean HD95 (mm) ↓",
        "mIoU (%) ↑",
        "seeds",
        "empty excl./pen.",
    ]
    ce = values(section, "dsc/liver")["ce"]
    assert ce[:2] == (pytest.approx(80), pytest.approx(14.14, abs=0.01))
    assert values(section, "hd95")["ce"][:2] == (pytest.approx(5.0), pytest.approx(1.41, abs=0.01))
    assert values(section, "iou")["ce"][:2] == (pytest.approx(50), 0)
    summary = pd.read_csv(out / "table.csv")
    head = [
        "name",
        "data",
        "protocol",
        "model",
        "category",
        "loss",
        "variant",
        "config",
        "dsc",
        "dsc:std",
        "hd95",
        "hd95:std",
    ]
    assert list(summary.columns[: len(head)]) == head
    assert summary.set_index("loss").loc["ce", "dsc"] == pytest.approx(0.6)  # record units
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["status"]) == ["completed", "completed", "completed", "failed", "running"]
    assert "non-finite" in runs.set_index("run").loc["dice1", "error"]


def test_cli_on_a_sweep_whose_runs_all_failed_writes_the_table_and_no_figure(tmp_path, capsys):
    write(tmp_path / "runs", "dice0", "dice", 0, status="failed")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "t")]) == 0
    (section,) = layout(summary_table(load_records([tmp_path / "runs"])))
    assert [c.key for c in section.columns] == ["dsc", "hd95", "iou", "seeds", "empty"]
    assert section.cell("dice", "seeds").note == "0 (1 failed)" and np.isnan(
        section.cell("dice", "dsc").value
    )
    assert "| region | dice | – | – | – | 0 (1 failed) | – |" in (tmp_path / "t" / "table.md").read_text()
    assert load_cases([tmp_path / "runs"]).empty and not list((tmp_path / "t").glob("*.png"))
    with pytest.raises(SystemExit):
        main(["--wandb", "me/p", "--baseline", "ce"])
    assert "--baseline and --by-size need run records" in capsys.readouterr().err


def test_cli_writes_every_format_table_statistics_and_plots(ranked, tmp_path):
    out = tmp_path / "tables"
    assert main([str(ranked), "--out", str(out), "--baseline", "ce"]) == 0
    for stem in ("table", "losses", "ranks", "ci", "wilcoxon"):
        assert (out / f"{stem}.md").stat().st_size > 0 and (out / f"{stem}.csv").stat().st_size > 0
    assert (out / "table.tex").read_text().startswith("% sweep")
    assert "<table>" in (out / "table.html").read_text()
    assert len(pd.read_csv(out / "table_shown.csv")) == 5
    for kind in ("heatmap", "bars", "curves"):
        for ext in ("png", "pdf"):
            assert (out / f"{kind}_sweep_synthetic_default_tiny.{ext}").stat().st_size > 1000
    assert (out / "sensitivity_sweep_synthetic_default_tiny_focal.png").stat().st_size > 1000


def test_best_is_marked_1_and_second_2_per_column_lower_hd95_better(ranked):
    (section,) = layout(summary_table(load_records([ranked])))
    marks = {k: {label: m for label, (_, _, m) in values(section, k).items()} for k in ("dsc", "hd95")}
    # mean DSC: dice 80 (best), combo 70 (second); HD95: boundary 2.5 (best), dice 3.5 (second)
    assert marks["dsc"] == {"ce": 0, "focal (gamma=5)": 0, "dice": 1, "boundary": 0, "combo": 2}
    assert marks["hd95"] == {"ce": 0, "focal (gamma=5)": 0, "dice": 2, "boundary": 1, "combo": 0}
    assert values(section, "hd95")["boundary"][:2] == (
        pytest.approx(2.5),
        pytest.approx(np.std([2, 3], ddof=1)),
    )
    assert values(section, "dsc/liver")["dice"] == (pytest.approx(90), pytest.approx(0), 1)
    assert [(cat, len(rows)) for cat, rows in section.groups()] == [
        ("pixel", 2),
        ("region", 1),
        ("boundary", 1),
        ("combination", 1),
    ]


def test_ties_and_columns_with_one_value_get_no_marks(sweep):
    (section,) = layout(summary_table(load_records([sweep])))
    assert {m for _, _, m in values(section, "dsc/liver").values()} == {0}  # ce and dice tie at 80
    assert all(c.mark != 2 for r in section.rows for c in r.cells)  # two values at most per column


def test_markdown_latex_html_and_csv_render_the_layout(ranked):
    layouts = layout(summary_table(load_records([ranked])))
    (section,) = layouts
    metric_cells = [c for r in section.rows for c in r.cells if c.kind == "metric"]
    best, second = sum(c.mark == 1 for c in metric_cells), sum(c.mark == 2 for c in metric_cells)
    assert best > 0 and second > 0
    md = to_markdown(layouts)
    assert md.count("**") == 2 * best and md.count("<u>") == second
    assert len([ln for ln in md.splitlines() if ln.startswith("| ")]) == 1 + len(section.rows)
    tex = to_latex(layouts)
    assert tex.count(r"\textbf{") == best and tex.count(r"\underline{") == second
    assert tex.count("{") == tex.count("}") and tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.open, self.tags = [], {"b": 0, "u": 0, "td": 0}

        def handle_starttag(self, tag, attrs):
            if tag != "meta":  # the one void element of the page
                self.open.append(tag)
            self.tags[tag] = self.tags.get(tag, 0) + 1

        def handle_endtag(self, tag):
            assert self.open.pop() == tag  # well nested

    parser = Cells()
    parser.feed(to_html(layouts))
    assert parser.open == [] and (parser.tags["b"], parser.tags["u"]) == (best, second)
    assert parser.tags["td"] == len(section.rows) * (1 + len(section.columns))
    rows = list(csv.DictReader(io.StringIO(to_csv(layouts))))
    assert [r["loss"] for r in rows] == [r.label for r in section.rows]
    for r, line in zip(section.rows, rows, strict=True):
        for c, cell in zip(section.columns, r.cells, strict=True):
            if c.kind == "metric":
                assert float(line[c.label]) == pytest.approx(cell.value, nan_ok=True)
                assert float(line[f"{c.label} std"] or "nan") == pytest.approx(cell.std, nan_ok=True)


def test_variants_with_non_default_hyperparameters_are_separate_rows(ranked):
    table = summary_table(load_records([ranked]))
    focal = table[table["loss"] == "focal"].iloc[0]
    assert focal["variant"] == "gamma=5" and focal["seeds"] == 1
    (section,) = layout(table)
    assert [r.label for r in section.rows][:2] == ["ce", "focal (gamma=5)"]
    assert variant("focal", {"gamma": 2.0, "alpha": None}) == ""
    assert variant("inverseform", {"checkpoint": "/runs/x/net.pt", "edge_weight": 0.6}) == "edge_weight=0.6"


def test_runs_of_other_configs_are_rows_of_their_own_never_averaged_as_seeds(tmp_path):
    lr = lambda v: {"trainer": {"optimizer": {"lr": v}}}  # noqa: E731
    write(tmp_path, "lr1", "ce", 0, dsc=(0.9, 0.9), config=lr(1e-3))
    write(tmp_path, "lr1s1", "ce", 1, dsc=(0.7, 0.7), config=lr(1e-3))
    write(tmp_path, "lr1s1again", "ce", 1, dsc=(0.7, 0.7), config=lr(1e-3))  # the same run twice
    write(tmp_path, "lr5", "ce", 0, dsc=(0.1, 0.1), config=lr(5e-2))
    # differ only in keys that cannot change the result: the same config
    write(tmp_path, "lr5b", "ce", 1, dsc=(0.3, 0.3), config={**lr(5e-2), "logger": {"name": "wandb"}})
    runs = load_records([tmp_path])
    assert runs.groupby("config").size().sort_values().tolist() == [2, 3]
    table = summary_table(runs).set_index("variant")
    assert sorted(table.index) == ["trainer.optimizer.lr=0.001", "trainer.optimizer.lr=0.05"]
    assert table.loc["trainer.optimizer.lr=0.001", "seeds"] == 2  # distinct seeds
    assert table.loc["trainer.optimizer.lr=0.001", "dsc"] == pytest.approx(0.8)
    assert table.loc["trainer.optimizer.lr=0.05", "seeds"] == 2
    assert table.loc["trainer.optimizer.lr=0.05", "dsc"] == pytest.approx(0.2)
    cases = load_cases([tmp_path])
    assert set(cases["variant"]) == set(table.index)  # statistics see the same rows
    (section,) = layout(summary_table(runs))
    assert values(section, "dsc")["ce (trainer.optimizer.lr=0.05)"][0] == pytest.approx(20)


def test_configs_told_apart_only_by_hidden_hyperparameters_get_a_config_label(tmp_path):
    for i, path in enumerate(("/a/net.pt", "/b/net.pt")):
        write(tmp_path, f"r{i}", "inverseform", 0, params={"checkpoint": path})
    table = summary_table(load_records([tmp_path]))
    assert len(table) == 2 and table["variant"].str.startswith("config=").all()
    assert table["variant"].nunique() == 2 and (table["seeds"] == 1).all()


def test_cases_carry_class_names_run_identity_and_ground_truth_sizes(ranked):
    cases = load_cases([ranked])
    assert set(cases["class"]) == set(CLASSES)  # ids 1, 5 ↔ per_class order
    dice = cases[(cases["loss"] == "dice") & (cases["seed"] == 0) & (cases["case"] == "case2")]
    assert dict(zip(dice["class"], dice["dsc"], strict=True)) == pytest.approx({"aorta": 0.72, "liver": 0.92})
    assert dict(zip(dice["class"], dice["gt_size"], strict=True)) == {"liver": 100, "aorta": 10}
    assert set(dice["run_dir"]) == {str(ranked / "dice0")}
    assert len(cases) == 9 * 2 * 3


def synthia_record(folder, subsets):
    iou = {c: (i + 1) / 20 for i, c in enumerate(("road", "sidewalk", "building", "wall"))}
    metrics = {
        "protocol": "cityscapes",
        "mean": {"iou": 0.5},
        "per_class": {c: {"iou": v} for c, v in iou.items()},
    }
    rec = {"name": "s", "status": "completed", "loss": "ce", "data": "synthia", "model": "m", "seed": 0}
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps(rec | {"metrics": metrics | subsets}))


def test_class_subset_columns_come_from_the_records_subsets(tmp_path):
    subsets = {
        "miou16": {"classes": ["road", "sidewalk", "building"], "iou": 0.31, "dsc": 0.4},
        "miou13": {"classes": ["road", "sidewalk"], "iou": 0.17, "dsc": 0.2},
    }
    synthia_record(tmp_path / "new", {"subsets": subsets})
    row = load_records([tmp_path / "new"]).iloc[0]
    assert (row["miou16"], row["miou13"]) == (0.31, 0.17)  # the evaluator's values, not recomputed
    (section,) = layout(summary_table(load_records([tmp_path / "new"])))
    assert [c.label for c in section.columns][:4] == ["road", "sidewalk", "building", "wall"]
    assert [c.key for c in section.columns][4:9] == ["dsc", "hd95", "iou", "miou16", "miou13"]
    assert section.cell("ce", "miou16").value == pytest.approx(31)
    synthia_record(tmp_path / "old", {})  # no subsets recorded: no subset columns
    assert not {"miou16", "miou13"} & set(load_records([tmp_path / "old"]).columns)
    synthia_record(tmp_path / "odd", {"subsets": {"miou7": {"classes": ["road"], "iou": 0.1}}})
    with pytest.raises(ValueError, match=r"odd: metrics.subsets has subset 'miou7'.*add it to SUBSETS"):
        load_records([tmp_path / "odd"])


def test_paper_values_add_paper_and_delta_columns(ranked, tmp_path):
    csv_path = tmp_path / "paper.csv"
    csv_path.write_text(
        "dataset,protocol,model,loss,metric,class,value,source\n"
        "synthetic,,,dice,DSC,,78.5,Table 3 p.12\n"
        "synthetic,default,tiny,dice,HD95,,4.0,Table 3 p.12\n"
        "synthetic,transunet,,ce,DSC,,50,Table 3 p.12\n"
        "synthetic,,,ce,DSC,liver,61,Table 4 p.13\n"
    )
    table = summary_table(load_records([ranked]), load_paper(csv_path)).set_index("loss")
    assert table.loc["dice", "paper:dsc"] == pytest.approx(0.785)
    assert table.loc["dice", "delta:dsc"] == pytest.approx(0.8 - 0.785)
    assert table.loc["dice", "delta:hd95"] == pytest.approx(3.5 - 4.0)
    assert np.isnan(table.loc["ce", "paper:dsc"])  # the transunet-protocol value does not match
    assert table.loc["ce", "paper:dsc/liver"] == pytest.approx(0.61)
    (section,) = layout(table.reset_index())
    keys = [c.key for c in section.columns]
    assert keys[keys.index("dsc") : keys.index("hd95") + 3] == [
        "dsc", "paper:dsc", "delta:dsc", "hd95", "paper:hd95", "delta:hd95",
    ]  # fmt: skip
    dice = {k: section.cell("dice", k) for k in ("dsc", "paper:dsc", "delta:dsc", "paper:hd95", "delta:hd95")}
    assert (dice["dsc"].value, dice["dsc"].mark) == (pytest.approx(80), 1)
    assert [dice[k].value for k in list(dice)[1:]] == pytest.approx([78.5, 1.5, 4.0, -0.5])
    assert (dice["delta:dsc"].text, dice["delta:hd95"].text) == ("+1.50", "-0.50")


def test_bad_paper_csv_names_the_line_and_the_problem(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text("dataset,model,loss,metric,value,source\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['protocol', 'class'\]"):
        load_paper(path)
    header = "dataset,protocol,model,loss,metric,class,value,source\n"
    path.write_text(header + "synthetic,,,dice,F1,,80,T3\n")
    with pytest.raises(ValueError, match=r"paper.csv:2: metric 'F1'"):
        load_paper(path)
    path.write_text(header + "synthetic,,,dice,DSC,,80.0,T3\nsynthetic,,,dice,DSC,,eighty,T3\n")
    with pytest.raises(ValueError, match=r"paper.csv:3: value 'eighty' is not a number"):
        load_paper(path)
    path.write_text(header + "synthetic,,,dice,DSC,,80,T3\nsynthetic,,tiny,dice,DSC,,81,T4\n")
    paper = load_paper(path)
    write(tmp_path, "dice0", "dice", 0)
    with pytest.raises(ValueError, match=r"2 rows give dsc for synthetic/tiny/dice \(sources T3, T4\)"):
        add_paper(summary_table(load_records([tmp_path / "dice0"])), paper)


def test_the_shipped_paper_files_follow_the_loaders_schema():
    """Whatever number of rows has been transcribed: the loader reads the file, every row maps to a
    metric column of our tables, and the README documents exactly the loader's columns."""
    folder = ROOT / "results" / "paper"
    paper = load_paper(folder / "survey_tables.csv")
    assert list(paper.columns) == [*PAPER_COLUMNS, "key", "ref"]
    assert all(is_metric(k) for k in paper["key"]) and paper["ref"].map(np.isfinite).all()
    assert (paper["dataset"] != "").all() and (paper["source"] != "").all()
    documented = re.findall(r"^\| `(\w+)` \|", (folder / "README.md").read_text(), flags=re.M)
    assert documented == PAPER_COLUMNS


def wandb_run(name, state, loss, seed, summary, protocol="transunet"):
    cfg = {
        "name": "wb",
        "seed": seed,
        "loss": {"name": loss, "params": {}},
        "data": {"name": "synapse", "protocol": protocol},
        "model": {"name": "unet_r34"},
    }
    return SimpleNamespace(
        name=name, state=state, config=cfg, summary_metrics=summary, url=f"https://w/{name}"
    )


class FakeApi:
    """The part of ``wandb.Api`` that the loader uses."""

    def __init__(self, runs, path="me/segloss", filters=None):
        self._runs, self.want = runs, (path, filters)

    def runs(self, path, filters=None):
        assert (path, filters) == self.want
        return self._runs


def test_wandb_runs_become_rows_like_records():
    def run(name, state, loss, seed, dsc=None):
        summary = (
            {} if dsc is None else {"test/dsc": dsc, "test/iou": 0.5, "test/hd95": 3.0, "test/dsc/liver": dsc}
        )
        return wandb_run(name, state, loss, seed, summary)

    api = FakeApi(
        [
            run("a", "finished", "ce", 0, 0.7),
            run("b", "finished", "ce", 1, 0.9),
            run("c", "crashed", "dice", 0),
            run("d", "finished", "dice", 1),  # the loop failed: finish() without test metrics
            run("e", "running", "dice", 2),
        ],
        filters={"group": "wb"},
    )
    runs = load_wandb("me/segloss", api=api, filters={"group": "wb"})
    assert list(runs["status"]) == ["completed", "completed", "failed", "failed", "running"]
    table = summary_table(runs).set_index("loss")
    assert table.loc["ce", "dsc/liver"] == pytest.approx(0.8) and table.loc["ce", "seeds"] == 2
    assert (table.loc["dice", "failed"], table.loc["dice", "unfinished"], table.loc["ce", "missing"]) == (
        2,
        1,
        1,
    )
    assert set(table["protocol"]) == {"transunet"} and set(table["name"]) == {"wb"}


def block(protocol, dsc, hd95):
    return {
        "protocol": protocol,
        "mean": {"dsc": dsc, "iou": dsc / 2, "hd95": hd95},
        "per_class": {"liver": {"dsc": dsc, "iou": dsc / 2, "hd95": hd95, "n": 3}},
        "subsets": {"miou16": {"classes": ["liver"], "iou": dsc / 3, "dsc": dsc}},
    }


def test_a_run_scored_under_two_protocols_gives_a_row_per_protocol_from_wandb(tmp_path, monkeypatch):
    """What ``WandbLogger.finish`` sends for a two-protocol run, the loader reads back as two rows
    (one per protocol, as from the record) that make a table."""
    import wandb

    from bench.logger import WandbLogger

    class FakeRun:
        def __init__(self):
            self.summary, self.logged = {}, {}

        def log(self, values, step=None):
            self.logged |= values

        def finish(self):
            pass

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", lambda **kw: FakeRun())
    both = ["default", "transunet"]
    summaries = []
    for seed, (d, t) in enumerate([(0.8, 0.7), (0.6, 0.5)]):
        logger = WandbLogger(
            project="p", entity=None, group=None, job_type="train", tags=[], run_dir=tmp_path,
            name=f"r{seed}", config={}, created=str(seed),
        )  # fmt: skip
        logger.finish(block("default", d, 2.0), [block("transunet", t, 9.0)])
        summaries.append(logger.run.summary)
        assert set(logger.run.logged) == {"test/per_class", "test/transunet/per_class"}
    assert summaries[0]["test/transunet/dsc/liver"] == 0.7 and "test/transunet/n/liver" not in summaries[0]
    api = FakeApi(
        [wandb_run(f"r{s}", "finished", "ce", s, summary, both) for s, summary in enumerate(summaries)]
    )
    api._runs.append(wandb_run("r2", "failed", "ce", 2, {}, both))
    runs = load_wandb("me/segloss", api=api)
    assert sorted(zip(runs["run"], runs["protocol"], runs["status"], strict=True)) == [
        ("r0", "default", "completed"),
        ("r0", "transunet", "completed"),
        ("r1", "default", "completed"),
        ("r1", "transunet", "completed"),
        ("r2", "default", "failed"),
        ("r2", "transunet", "failed"),
    ]
    table = summary_table(runs).set_index("protocol")
    assert table.loc["default", "dsc"] == pytest.approx(0.7) and table.loc[
        "transunet", "dsc"
    ] == pytest.approx(0.6)
    assert table.loc["transunet", "hd95"] == 9.0 and table.loc["transunet", "miou16"] == pytest.approx(0.2)
    assert (table["seeds"] == 2).all() and (table["failed"] == 1).all()
    assert [s.title.split(" — ")[0] for s in layout(table.reset_index())] == [
        "wb · synapse · default protocol · unet_r34",
        "wb · synapse · transunet protocol · unet_r34",
    ]


def test_a_run_scored_under_two_protocols_gives_a_row_per_protocol_from_records(tmp_path):
    both = {"data": {"name": "synthetic", "protocol": ["default", "transunet"]}}
    write(tmp_path, "ce0", "ce", 0, config=both)
    path = tmp_path / "ce0" / "record.json"
    rec = json.loads(path.read_text())
    rec["more_metrics"] = [{**rec["metrics"], "protocol": "transunet", "mean": {"dsc": 0.3}}]
    path.write_text(json.dumps(rec))
    write(tmp_path, "ce1", "ce", 1, status="failed", config=both)
    table = summary_table(load_records([tmp_path])).set_index("protocol")
    assert (table.loc["default", "dsc"], table.loc["transunet", "dsc"]) == (pytest.approx(0.7), 0.3)
    assert (table["seeds"] == 1).all() and (table["failed"] == 1).all()  # the failed run in both
    assert sorted(load_cases([tmp_path]).groupby("protocol").size().items()) == [
        ("default", 6),
        ("transunet", 6),
    ]


def test_loss_table_lists_every_registered_loss_with_category_and_defaults():
    table = loss_table().set_index("loss")
    assert set(table.index) == set(losses.list_losses())
    assert table.loc["focal", "category"] == "pixel" and "gamma=2" in table.loc["focal", "hyper-parameters"]
    assert (table["survey"] == "yes").sum() == sum(losses.loss_info(n).survey for n in losses.list_losses())
    assert list(dict.fromkeys(table["category"])) == ["pixel", "region", "boundary", "combination"]


def test_no_records_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no run records"):
        load_records([tmp_path])
    with pytest.raises(FileNotFoundError, match="no run record or directory"):
        load_records([tmp_path / "missing"])


def add_boundary_scores(folder, name, nsd, assd):
    """Give a hand-made record the default protocol's NSD and ASSD (mean, per class, per case)."""
    path = folder / name / "record.json"
    rec = json.loads(path.read_text())
    m = rec["metrics"]
    m["mean"].update(nsd=nsd, assd=assd)
    for vals in m["per_class"].values():
        vals.update(nsd=nsd, assd=assd)
    for row in m["per_case"]:
        row.update(nsd=nsd, assd=assd)
    path.write_text(json.dumps(rec))


def test_nsd_and_assd_are_carried_and_shown_when_selected(tmp_path, capsys):
    for loss, nsd, assd in (("ce", 0.5, 4.0), ("dice", 0.9, 1.0), ("focal", 0.7, 2.0)):
        write(tmp_path, f"{loss}0", loss, 0)
        add_boundary_scores(tmp_path, f"{loss}0", nsd, assd)
    write(tmp_path, "boundary0", "boundary", 0)  # an older record: no NSD/ASSD
    runs = load_records([tmp_path])
    table = summary_table(runs).set_index("loss")
    assert table.loc["dice", "nsd"] == pytest.approx(0.9) and table.loc["ce", "assd/liver"] == 4.0
    assert np.isnan(table.loc["boundary", "nsd"])
    cases = load_cases([tmp_path])
    assert cases.groupby("loss")["assd"].mean().to_dict() == pytest.approx(
        {"ce": 4.0, "dice": 1.0, "focal": 2.0, "boundary": np.nan}, nan_ok=True
    )
    table = summary_table(runs)
    means = lambda section: [c.key for c in section.columns if "/" not in c.key and c.kind == "metric"]  # noqa: E731
    assert means(layout(table)[0]) == ["dsc", "hd95", "iou"]  # the paper form
    (section,) = layout(table, metrics=["dsc", "nsd", "assd"])
    assert means(section) == ["dsc", "nsd", "assd"]
    assert [c.label for c in section.columns if c.key in ("nsd", "assd")] == [
        "mean NSD (%) ↑",
        "mean ASSD (mm) ↓",
    ]
    nsd, assd = values(section, "nsd"), values(section, "assd")
    assert (nsd["dice"][0], nsd["dice"][2], nsd["focal"][2]) == (pytest.approx(90), 1, 2)
    assert (assd["dice"][0], assd["dice"][2], assd["focal"][2]) == (1.0, 1, 2)  # ASSD: lower is better
    assert "biou" not in means(layout(table, metrics=["all"])[0])  # no value in any run
    assert main([str(tmp_path), "--metrics", "nsd,assd", "--no-plots"]) == 0
    assert "mean ASSD (mm) ↓" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--metrics", "nsd,bogus"])
    assert "choose from dsc, hd95, iou" in capsys.readouterr().err


def test_schema_labels_every_protocol_score_and_takes_the_headline_from_the_protocol():
    from bench.protocols import get_protocol, list_protocols
    from bench.results import schema

    for name in list_protocols():
        assert set(get_protocol(name).scores) <= set(schema.SCORES), name
        assert schema.per_class_metric(name) == get_protocol(name).headline
    assert schema.per_class_metric("cityscapes") == "iou" and schema.per_class_metric("") == "dsc"
