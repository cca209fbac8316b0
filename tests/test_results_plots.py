"""Figures: written as non-empty PNG and PDF, drawing exactly the table's numbers."""

import numpy as np
import pytest
from test_results_tables import write

from bench.results.load import load_records
from bench.results.plots import bars, curves, heatmap, plot_all, sensitivity
from bench.results.stats import sensitivity_table
from bench.results.table import summary_table


@pytest.fixture
def runs(tmp_path):
    for loss, d in (("ce", 0.6), ("dice", 0.8), ("focal", 0.7)):
        for seed in (0, 1):
            write(
                tmp_path / "runs", f"{loss}{seed}", loss, seed, dsc=(d + 0.1 * seed, d - 0.2), hd95=3.0 + seed
            )
    write(tmp_path / "runs", "focal_g1", "focal", 0, dsc=(0.5, 0.4), params={"gamma": 1.0})
    return load_records([tmp_path / "runs"])


def assert_figure(stem):
    png, pdf = stem.with_suffix(".png").read_bytes(), stem.with_suffix(".pdf").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


def test_heatmap_draws_the_tables_per_class_matrix(runs, tmp_path):
    table = summary_table(runs)
    matrix = heatmap(table, tmp_path / "heat", metric="dsc")
    assert list(matrix.columns) == ["liver", "aorta"]
    assert list(matrix.index) == ["ce", "focal", "focal (gamma=1)", "dice"]
    np.testing.assert_array_equal(matrix.to_numpy(), table[["dsc/liver", "dsc/aorta"]].to_numpy())
    assert_figure(tmp_path / "heat")


def test_bars_draw_means_with_std_error_bars(runs, tmp_path):
    table = summary_table(runs)
    drawn = bars(table, tmp_path / "bars")
    np.testing.assert_array_equal(drawn["dsc"], table["dsc"])
    np.testing.assert_array_equal(drawn["hd95:std"], table["hd95:std"])
    assert drawn["hd95:std"].iloc[0] == pytest.approx(np.std([3.0, 4.0], ddof=1))
    assert_figure(tmp_path / "bars")


def test_curves_average_the_seeds_at_each_step(runs, tmp_path):
    drawn = curves(runs, tmp_path / "curves")
    ce = drawn[(drawn["label"] == "ce") & (drawn["kind"] == "train/loss")]
    assert list(ce["step"]) == [1, 2] and list(ce["value"]) == pytest.approx([1.0, 0.5])
    assert set(drawn["label"]) == {"ce", "dice", "focal", "focal (gamma=1)"}
    assert_figure(tmp_path / "curves")
    assert curves(runs.assign(history=None), tmp_path / "none").empty
    assert not (tmp_path / "none.png").exists()


def test_sensitivity_curve_and_plot_all_write_every_figure(runs, tmp_path):
    table = sensitivity_table(runs)
    assert list(table["value"]) == [1.0, 2.0] and list(table["default"]) == [False, True]
    sensitivity(table, tmp_path / "sens")
    assert_figure(tmp_path / "sens")
    written = plot_all(summary_table(runs), runs, tmp_path / "all")
    stem = "sweep_synthetic_default_tiny"
    expected = [f"{k}_{stem}.png" for k in ("heatmap", "bars", "curves")] + [f"sensitivity_{stem}_focal.png"]
    assert sorted(p.name for p in written) == sorted(expected)
    for p in written:
        assert_figure(p)


def test_a_section_whose_runs_all_failed_draws_no_heatmap_or_bars(tmp_path):
    write(tmp_path, "dice0", "dice", 0, status="failed")
    runs = load_records([tmp_path])
    table = summary_table(runs)
    assert heatmap(table, tmp_path / "heat").empty and bars(table, tmp_path / "bars").empty
    assert plot_all(table, runs, tmp_path) == []
    assert not list(tmp_path.glob("*.png"))
