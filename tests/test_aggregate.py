"""The aggregator's table from hand-made records: means, stds, seeds, failed and missing runs."""

import json

import numpy as np
import pytest

from bench.aggregate import load_records, main, summary_table, to_markdown


def write(folder, name, loss, seed, status="completed", dsc=(0.8, 0.6), hd95=5.0, iou=0.5):
    metrics = None
    if status == "completed":
        metrics = {
            "protocol": "default",
            "units": "mm",
            "mean": {"dsc": float(np.mean(dsc)), "iou": iou, "hd95": hd95},
            "per_class": {
                c: {"dsc": d, "iou": iou, "hd95": hd95} for c, d in zip(("liver", "aorta"), dsc, strict=True)
            },
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
        "metrics": metrics,
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


def test_one_row_per_loss_with_means_and_stds_over_seeds(sweep):
    table = summary_table(load_records([sweep])).set_index("loss")
    assert list(table.index) == ["ce", "dice", "focal"]
    assert table.loc["ce", "dsc"] == pytest.approx(0.6)
    assert table.loc["ce", "dsc:std"] == pytest.approx(np.std([0.7, 0.5], ddof=1))
    assert table.loc["ce", "dsc/liver"] == pytest.approx(0.8)
    assert table.loc["ce", "hd95"] == pytest.approx(5.0)
    assert table.loc["ce", "seeds"] == 2


def test_failed_and_unfinished_runs_are_counted_not_dropped(sweep):
    table = summary_table(load_records([sweep])).set_index("loss")
    assert (table.loc["dice", "seeds"], table.loc["dice", "failed"]) == (1, 1)
    assert np.isnan(table.loc["dice", "dsc:std"])
    assert (table.loc["focal", "seeds"], table.loc["focal", "unfinished"]) == (0, 1)
    md = to_markdown(summary_table(load_records([sweep])))
    assert "| dice | 80.00 | 80.00 | 80.00 | 2.00 | 50.00 | 1 (1 failed) |" in md
    assert "| focal | – | – | – | – | – | 0 (1 unfinished) |" in md


def test_markdown_and_csv_outputs(sweep, tmp_path, capsys):
    out = tmp_path / "tables"
    assert main([str(sweep), "--out", str(out)]) == 0
    md = (out / "table.md").read_text()
    assert md.strip() in capsys.readouterr().out
    assert "| loss | liver | aorta | mean DSC (%) | mean HD95 (mm) | mIoU (%) | seeds |" in md
    assert "| ce | 80.00 ± 14.14 | 40.00 ± 14.14 | 60.00 ± 14.14 | 5.00 ± 1.41 | 50.00 ± 0.00 | 2 |" in md
    csv = (out / "table.csv").read_text().splitlines()
    assert csv[0].startswith("data,model,loss,dsc/liver,dsc/liver:std")


def test_no_records_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no run records"):
        load_records([tmp_path])
    with pytest.raises(FileNotFoundError, match="no run record or directory"):
        load_records([tmp_path / "missing"])
