"""The aggregator's tables from hand-made records: means, stds, seeds, failed and missing runs,
categories, variants, best/second marks, every output format, paper columns and W&B input."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

import losses
from bench.aggregate import (
    add_paper,
    load_cases,
    load_paper,
    load_records,
    load_wandb,
    loss_table,
    main,
    summary_table,
    to_html,
    to_latex,
    to_markdown,
    variant,
)
from datasets.cityscapes import CLASS_NAMES as CITYSCAPES


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
):
    metrics = None
    if status == "completed":
        metrics = {
            "protocol": "default",
            "units": "mm",
            "mean": {"dsc": float(np.mean(dsc)), "iou": iou, "hd95": hd95},
            "per_class": {
                c: {"dsc": d, "iou": iou, "hd95": hd95} for c, d in zip(("liver", "aorta"), dsc, strict=True)
            },
            "per_case": [
                {
                    "case": f"case{k}",
                    "class": c,
                    "dsc": d + 0.01 * k,
                    "iou": iou,
                    "hd95": hd95,
                    "empty": "none",
                }
                for k in range(3)
                for c, d in zip((1, 5), dsc, strict=True)
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
    md = to_markdown(summary_table(load_records([sweep])))
    assert "| region | dice | 80.00 | **80.00** | **80.00** | **2.00** | 50.00 | 1 (1 failed) | 1/0 |" in md
    assert "|  | focal | – | – | – | – | – | 0 (1 unfinished) (1 missing) | – |" in md


def test_markdown_and_csv_outputs(sweep, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main([str(sweep), "--out", str(out)]) == 0
    md = (out / "table.md").read_text()
    assert md.strip() in capsys.readouterr().out
    assert "### sweep · synthetic · default protocol · tiny — per-class DSC, mean ± std over seeds" in md
    assert (
        "| category | loss | liver | aorta | mean DSC (%) ↑ | mean HD95 (mm) ↓ | mIoU (%) ↑ | seeds "
        "| empty excl./pen. |" in md
    )
    assert (
        "| pixel | ce | 80.00 ± 14.14 | 40.00 ± 14.14 | 60.00 ± 14.14 | 5.00 ± 1.41 | 50.00 ± 0.00 "
        "| 2 | 1/0 |" in md
    )
    csv = (out / "table.csv").read_text().splitlines()
    head = "name,data,protocol,model,category,loss,variant,config,dsc,dsc:std,hd95,hd95:std"
    assert csv[0].startswith(head)
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs["status"]) == ["completed", "completed", "completed", "failed", "running"]
    assert "non-finite" in runs.set_index("run").loc["dice1", "error"]


def test_cli_on_a_sweep_whose_runs_all_failed_writes_the_table_and_no_figure(tmp_path, capsys):
    write(tmp_path / "runs", "dice0", "dice", 0, status="failed")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "t")]) == 0
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
    for kind in ("heatmap", "bars", "curves"):
        for ext in ("png", "pdf"):
            assert (out / f"{kind}_sweep_synthetic_default_tiny.{ext}").stat().st_size > 1000
    assert (out / "sensitivity_sweep_synthetic_default_tiny_focal.png").stat().st_size > 1000


def test_best_is_bold_and_second_underlined_per_column_lower_hd95_better(ranked):
    table = summary_table(load_records([ranked]))
    md = to_markdown(table)
    # mean DSC: dice 80 (best), combo 70 (second); HD95: boundary 2.5 (best), dice 3.5 (second)
    assert (
        "| region | dice | **90.00 ± 0.00** | **70.00 ± 0.00** | **80.00 ± 0.00** | <u>3.50 ± 0.71</u> |"
        in md
    )
    assert "| boundary | boundary | 70.00 ± 0.00 | 50.00 ± 0.00 | 60.00 ± 0.00 | **2.50 ± 0.71** |" in md
    assert (
        "| combination | combo | <u>80.00 ± 0.00</u> | <u>60.00 ± 0.00</u> | <u>70.00 ± 0.00</u> "
        "| 5.50 ± 0.71 |" in md
    )
    tex = to_latex(table)
    assert r"\textbf{80.00 $\pm$ 0.00}" in tex and r"\underline{70.00 $\pm$ 0.00}" in tex
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1 and r"mean HD95 (mm) $\downarrow$" in tex
    html = to_html(table)
    assert "<td><b>80.00 ± 0.00</b></td>" in html and "<td><u>70.00 ± 0.00</u></td>" in html
    assert '<th rowspan="2">pixel</th>' in html  # ce and focal (gamma=5)


def test_ties_and_columns_with_one_value_get_no_marks(sweep):
    md = to_markdown(summary_table(load_records([sweep])))
    assert "**80.00 ± 14.14**" not in md and "<u>" not in md  # liver ties at 80, two values only


def test_variants_with_non_default_hyperparameters_are_separate_rows(ranked):
    table = summary_table(load_records([ranked]))
    focal = table[table["loss"] == "focal"].iloc[0]
    assert focal["variant"] == "gamma=5" and focal["seeds"] == 1
    assert "| pixel | ce |" in to_markdown(table) and "|  | focal (gamma=5) |" in to_markdown(table)
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
    assert "ce (trainer.optimizer.lr=0.05)" in to_markdown(summary_table(runs))


def test_configs_told_apart_only_by_hidden_hyperparameters_get_a_config_label(tmp_path):
    for i, path in enumerate(("/a/net.pt", "/b/net.pt")):
        write(tmp_path, f"r{i}", "inverseform", 0, params={"checkpoint": path})
    table = summary_table(load_records([tmp_path]))
    assert len(table) == 2 and table["variant"].str.startswith("config=").all()
    assert table["variant"].nunique() == 2 and (table["seeds"] == 1).all()


def test_cases_carry_class_names_and_run_identity(ranked):
    cases = load_cases([ranked])
    assert set(cases["class"]) == {"liver", "aorta"}  # ids 1, 5 ↔ per_class order
    dice = cases[(cases["loss"] == "dice") & (cases["seed"] == 0) & (cases["case"] == "case2")]
    assert dict(zip(dice["class"], dice["dsc"], strict=True)) == pytest.approx({"aorta": 0.72, "liver": 0.92})
    assert len(cases) == 9 * 2 * 3


def test_synthia_runs_report_the_16_and_13_class_mious(tmp_path):
    iou = {c: (i + 1) / 20 for i, c in enumerate(CITYSCAPES)}
    rec = {
        "name": "s",
        "status": "completed",
        "loss": "ce",
        "data": "synthia",
        "model": "m",
        "seed": 0,
        "metrics": {
            "protocol": "cityscapes",
            "mean": {"iou": 0.5},
            "per_class": {c: {"iou": v} for c, v in iou.items()},
        },
    }
    (tmp_path / "record.json").write_text(json.dumps(rec))
    row = load_records([tmp_path]).iloc[0]
    absent16 = ("terrain", "truck", "train")
    assert row["miou16"] == pytest.approx(np.mean([v for c, v in iou.items() if c not in absent16]))
    absent13 = (*absent16, "wall", "fence", "pole")
    assert row["miou13"] == pytest.approx(np.mean([v for c, v in iou.items() if c not in absent13]))
    md = to_markdown(summary_table(load_records([tmp_path])))
    assert "| loss | road | sidewalk |" in md and "| mIoU (%) ↑ | mIoU16 (%) ↑ | mIoU13 (%) ↑ |" in md


def test_paper_values_add_paper_and_delta_columns(ranked, tmp_path):
    csv = tmp_path / "paper.csv"
    csv.write_text(
        "dataset,protocol,model,loss,metric,class,value,source\n"
        "synthetic,,,dice,DSC,,78.5,Table 3 p.12\n"
        "synthetic,default,tiny,dice,HD95,,4.0,Table 3 p.12\n"
        "synthetic,transunet,,ce,DSC,,50,Table 3 p.12\n"
        "synthetic,,,ce,DSC,liver,61,Table 4 p.13\n"
    )
    table = summary_table(load_records([ranked]), load_paper(csv)).set_index("loss")
    assert table.loc["dice", "paper:dsc"] == pytest.approx(0.785)
    assert table.loc["dice", "delta:dsc"] == pytest.approx(0.8 - 0.785)
    assert table.loc["dice", "delta:hd95"] == pytest.approx(3.5 - 4.0)
    assert np.isnan(table.loc["ce", "paper:dsc"])  # the transunet-protocol value does not match
    assert table.loc["ce", "paper:dsc/liver"] == pytest.approx(0.61)
    md = to_markdown(table.reset_index())
    assert "| mean DSC (%) ↑ | paper | Δ | mean HD95 (mm) ↓ | paper | Δ |" in md
    assert "| **80.00 ± 0.00** | 78.50 | +1.50 | <u>3.50 ± 0.71</u> | 4.00 | -0.50 |" in md


def test_bad_paper_csv_names_the_line_and_the_problem(tmp_path):
    csv = tmp_path / "paper.csv"
    csv.write_text("dataset,model,loss,metric,value,source\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['protocol', 'class'\]"):
        load_paper(csv)
    header = "dataset,protocol,model,loss,metric,class,value,source\n"
    csv.write_text(header + "synthetic,,,dice,F1,,80,T3\n")
    with pytest.raises(ValueError, match=r"paper.csv:2: metric 'F1'"):
        load_paper(csv)
    csv.write_text(header + "synthetic,,,dice,DSC,,80.0,T3\nsynthetic,,,dice,DSC,,eighty,T3\n")
    with pytest.raises(ValueError, match=r"paper.csv:3: value 'eighty' is not a number"):
        load_paper(csv)
    csv.write_text(header + "synthetic,,,dice,DSC,,80,T3\nsynthetic,,tiny,dice,DSC,,81,T4\n")
    paper = load_paper(csv)
    write(tmp_path, "dice0", "dice", 0)
    with pytest.raises(ValueError, match=r"2 rows give dsc for synthetic/tiny/dice \(sources T3, T4\)"):
        add_paper(summary_table(load_records([tmp_path / "dice0"])), paper)


def test_the_paper_template_is_empty_until_transcribed():
    assert load_paper(ROOT / "results" / "paper" / "survey_tables.csv").empty


def test_wandb_runs_become_rows_like_records():
    def run(name, state, loss, seed, dsc=None):
        summary = (
            {} if dsc is None else {"test/dsc": dsc, "test/iou": 0.5, "test/hd95": 3.0, "test/dsc/liver": dsc}
        )
        cfg = {
            "name": "wb",
            "seed": seed,
            "loss": {"name": loss, "params": {}},
            "data": {"name": "synapse", "protocol": "transunet"},
            "model": {"name": "unet_r34"},
        }
        return SimpleNamespace(
            name=name, state=state, config=cfg, summary_metrics=summary, url=f"https://w/{name}"
        )

    class FakeApi:
        def runs(self, path, filters=None):
            assert (path, filters) == ("me/segloss", {"group": "wb"})
            return [
                run("a", "finished", "ce", 0, 0.7),
                run("b", "finished", "ce", 1, 0.9),
                run("c", "crashed", "dice", 0),
                run("d", "finished", "dice", 1),  # the loop failed: finish() without test metrics
                run("e", "running", "dice", 2),
            ]

    runs = load_wandb("me/segloss", api=FakeApi(), filters={"group": "wb"})
    assert list(runs["status"]) == ["completed", "completed", "failed", "failed", "running"]
    table = summary_table(runs).set_index("loss")
    assert table.loc["ce", "dsc/liver"] == pytest.approx(0.8) and table.loc["ce", "seeds"] == 2
    assert (table.loc["dice", "failed"], table.loc["dice", "unfinished"], table.loc["ce", "missing"]) == (
        2,
        1,
        1,
    )
    assert set(table["protocol"]) == {"transunet"} and set(table["name"]) == {"wb"}


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
    assert "NSD" not in to_markdown(table) and "mean HD95" in to_markdown(table)  # the paper form
    md = to_markdown(table, metrics=["dsc", "nsd", "assd"])
    assert "| mean DSC (%) ↑ | mean NSD (%) ↑ | mean ASSD (mm) ↓ |" in md and "HD95" not in md
    assert (
        "| **90.00** | **1.00** |" in md and "| <u>70.00</u> | <u>2.00</u> |" in md
    )  # ASSD: lower is better
    assert "mean Boundary IoU" not in to_markdown(table, metrics=["all"])  # no value in any run
    assert main([str(tmp_path), "--metrics", "nsd,assd", "--no-plots"]) == 0
    assert "mean ASSD (mm) ↓" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--metrics", "nsd,bogus"])
    assert "choose from dsc, hd95, iou" in capsys.readouterr().err
