"""Statistics against SciPy and hand computations: Wilcoxon + Holm, bootstrap, ranks, sizes (from the
records' ground-truth sizes), sensitivity."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from test_results_tables import write

import losses
from bench.results.__main__ import main
from bench.results.load import load_cases
from bench.results.schema import KEYS
from bench.results.stats import (
    bootstrap_ci,
    ci_table,
    class_sizes,
    holm,
    paired_tests,
    rank_table,
    section_sizes,
    sensitivity_table,
    size_groups,
    size_table,
)

IDENT = {"name": "s", "data": "synapse", "protocol": "default", "model": "m", "variant": ""}


def make_cases(values: dict[str, np.ndarray], classes=("aorta", "liver")) -> pd.DataFrame:
    """values[loss]: [seeds, cases, classes] DSC; HD95 = 10·(1 − DSC), IoU = DSC / (2 − DSC)."""
    rows = []
    for loss, v in values.items():
        cat = losses.loss_info(loss).category
        for (s, c, k), d in np.ndenumerate(v):
            rows.append(
                {
                    **IDENT,
                    "category": cat,
                    "loss": loss,
                    "seed": s,
                    "case": f"case{c:02d}",
                    "class": classes[k],
                    "dsc": d,
                }
            )
    df = pd.DataFrame(rows)
    return df.assign(hd95=10 * (1 - df["dsc"]), iou=df["dsc"] / (2 - df["dsc"]), empty="none")[
        [*KEYS, "seed", "case", "class", "dsc", "iou", "hd95", "empty"]
    ]


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    """2 seeds × 12 cases × 2 classes: dice clearly above the ce baseline, focal close to it."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, (2, 12, 2))
    dice = np.clip(base + rng.normal(0.08, 0.05, base.shape), 0, 1)
    focal = np.clip(base + rng.normal(0.0, 0.05, base.shape), 0, 1)
    dice[0, 3, 1] = np.nan  # an excluded (both-empty) pair
    focal[:, 5, :] = np.nan  # a case with no value at all: not paired
    return {"ce": base, "dice": dice, "focal": focal}


@pytest.fixture
def cases(arrays):
    return make_cases(arrays)


def hand_case_means(v: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a case with every class NaN
        return np.nanmean(v, axis=2).mean(axis=0)  # classes (NaN-mean), then seeds


def test_holm_matches_the_step_down_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    rng = np.random.default_rng(1)
    for _ in range(20):
        q = rng.uniform(0, 0.2, 7)
        order, m = np.argsort(q), len(q)
        expected, running = np.empty(m), 0.0
        for i, j in enumerate(order):
            running = max(running, min(1.0, (m - i) * q[j]))
            expected[j] = running
        np.testing.assert_allclose(holm(q), expected)


def test_paired_tests_are_scipy_wilcoxon_on_case_means_with_holm(arrays, cases):
    table = paired_tests(cases, baseline="ce").set_index(["metric", "loss"])
    b = hand_case_means(arrays["ce"])
    p = {}
    for loss in ("dice", "focal"):
        d = hand_case_means(arrays[loss]) - b
        d = d[~np.isnan(d)]
        ref = sps.wilcoxon(d)
        row = table.loc[("dsc", loss)]
        assert row["n"] == len(d) == (12 if loss == "dice" else 11)
        assert row["statistic"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
        assert row["mean_diff"] == pytest.approx(d.mean()) and row["median_diff"] == pytest.approx(
            np.median(d)
        )
        p[loss] = ref.pvalue
    small, large = sorted(p.values())
    adjusted = {k: (2 * v if v == small else max(2 * small, large)) for k, v in p.items()}
    assert table.loc[("dsc", "dice"), "p_holm"] == pytest.approx(min(1, adjusted["dice"]))
    assert table.loc[("dsc", "focal"), "p_holm"] == pytest.approx(min(1, adjusted["focal"]))
    assert table.loc[("dsc", "dice"), "significant"] and table.loc[("dsc", "dice"), "better"] == "dice"
    # HD95 falls as DSC rises here: dice is better on HD95 too, lower being better
    assert table.loc[("hd95", "dice"), "mean_diff"] < 0 and table.loc[("hd95", "dice"), "better"] == "dice"
    assert not table.loc[("dsc", "focal"), "significant"] and table.loc[("dsc", "focal"), "better"] == ""


def test_identical_losses_give_p_one_and_a_missing_baseline_is_named():
    same = np.full((1, 6, 2), 0.7)
    table = paired_tests(make_cases({"ce": same, "dice": same}), baseline="ce", metrics=["dsc"])
    assert (table["p"].iloc[0], table["statistic"].iloc[0], table["n"].iloc[0]) == (1.0, 0.0, 6)
    with pytest.raises(ValueError, match=r"baseline loss 'tversky'.*choose one of ce, dice"):
        paired_tests(make_cases({"ce": same, "dice": same}), baseline="tversky")


def test_bootstrap_interval_agrees_with_scipy_percentile_bootstrap_and_is_seeded():
    x = np.random.default_rng(2).normal(0.7, 0.1, 40)
    ours = bootstrap_ci(x, n_resamples=20_000, seed=3)
    ref = sps.bootstrap((x,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(4))
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert ours[0] == pytest.approx(ref.confidence_interval.low, abs=0.05 * se)
    assert ours[1] == pytest.approx(ref.confidence_interval.high, abs=0.05 * se)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=5)
    assert bootstrap_ci([np.nan, 1.0, np.nan]) == (1.0, 1.0) and np.isnan(bootstrap_ci([])[0])


def test_ci_table_bootstraps_the_case_means(cases):
    table = ci_table(cases, metrics=["dsc"], seed=7).set_index("loss")
    focal = cases[cases["loss"] == "focal"]
    v = focal.groupby(["seed", "case"])["dsc"].mean().groupby("case").mean().dropna().to_numpy()
    assert table.loc["focal", "n"] == len(v) == 11 and table.loc["focal", "mean"] == pytest.approx(v.mean())
    assert (table.loc["focal", "low"], table.loc["focal", "high"]) == pytest.approx(bootstrap_ci(v, seed=7))


def summary(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    """(data, protocol, loss, dsc, hd95) → a minimal summary table."""
    return pd.DataFrame(
        [
            {"name": "", "data": d, "protocol": p, "model": "m", "category": losses.loss_info(loss).category}
            | {"loss": loss, "variant": "", "dsc": dsc, "hd95": hd, "iou": dsc / 2}
            for d, p, loss, dsc, hd in rows
        ]
    )


def test_rank_table_ranks_each_section_and_averages_across_datasets():
    table = summary(
        [
            ("synapse", "default", "ce", 0.70, 9.0),
            ("synapse", "default", "dice", 0.80, 5.0),
            ("synapse", "default", "focal", 0.70, 4.0),
            ("cityscapes", "cityscapes", "ce", 0.10, 1.0),
            ("cityscapes", "cityscapes", "dice", 0.60, 2.0),
            ("cityscapes", "cityscapes", "focal", 0.20, 3.0),
        ]
    )
    ranks = rank_table(table).set_index("loss")  # DSC on synapse, mIoU (iou) on cityscapes
    assert ranks.loc["dice", "synapse · default protocol · m (DSC)"] == 1
    assert ranks.loc["ce", "synapse · default protocol · m (DSC)"] == 2.5  # tie with focal
    assert ranks.loc["focal", "cityscapes · cityscapes protocol · m (IoU)"] == 2
    assert list(ranks.index) == ["dice", "focal", "ce"] and ranks.loc["focal", "mean rank"] == 2.25
    hd = rank_table(table, "hd95").set_index("loss")
    assert hd.loc["focal", "synapse · default protocol · m (HD95)"] == 1  # lower is better


def test_class_sizes_average_per_case_sizes_over_the_cases_with_the_class():
    rows = [("a", "big", 5), ("b", "big", 1), ("a", "small", 1), ("b", "small", 0), ("a", "absent", 0)]
    cases = pd.DataFrame(rows, columns=["case", "class", "gt_size"]).assign(run_dir="r")
    sizes = class_sizes(pd.concat([cases, cases.assign(run_dir="r2")]))  # a second seed: same sizes
    assert sizes["big"] == (5 + 1) / 2 and sizes["small"] == 1 and np.isnan(sizes["absent"])
    with pytest.raises(ValueError, match=r"old_run: its record has no gt_size.*re-evaluate the run"):
        class_sizes(pd.concat([cases, cases.assign(run_dir="old_run", gt_size=np.nan)]))


def test_size_table_averages_the_per_class_metric_over_size_tertiles():
    sizes = pd.Series({f"c{i}": 10.0 * (i + 1) for i in range(8)} | {"background": 1e6})
    groups = size_groups(sizes, [f"c{i}" for i in reversed(range(8))])
    assert groups == {"small": ["c0", "c1", "c2"], "medium": ["c3", "c4", "c5"], "large": ["c6", "c7"]}
    row = summary([("synapse", "default", "dice", 0.5, 1.0)]).iloc[0].to_dict()
    row |= {f"dsc/c{i}": i / 10 for i in range(8)}
    table = size_table(pd.DataFrame([row]), {("", "synapse", "default", "m"): sizes}).iloc[0]
    assert (table["small"], table["medium"], table["large"]) == pytest.approx((0.1, 0.4, 0.65))
    assert table["large classes"] == "c6 c7"
    with pytest.raises(ValueError, match="no class sizes for section 'synapse · default protocol · m'"):
        size_table(pd.DataFrame([row]), {})


def test_sensitivity_table_puts_the_default_run_on_every_hyperparameter_curve():
    def run(params, seed, dsc):
        return {**IDENT, "category": "region", "loss": "tversky", "status": "completed"} | {
            "seed": seed,
            "params": {**losses.loss_info("tversky").hparams, **params},
            "dsc": dsc,
        }

    runs = pd.DataFrame(
        [
            run({}, 0, 0.70),
            run({}, 1, 0.72),
            run({"alpha": 0.5}, 0, 0.60),
            run({"alpha": 0.1}, 0, 0.65),
            run({"beta": 0.9}, 0, 0.75),
            run({"alpha": 0.5, "beta": 0.5}, 0, 0.66),
        ]
    )
    table = sensitivity_table(runs)
    alpha = table[table["hparam"] == "alpha"]
    assert list(alpha["value"]) == [0.1, 0.3, 0.5] and list(alpha["default"]) == [False, True, False]
    assert list(alpha["mean"]) == pytest.approx([0.65, 0.71, 0.60]) and list(alpha["n"]) == [1, 2, 1]
    assert alpha["std"].iloc[1] == pytest.approx(np.std([0.70, 0.72], ddof=1))
    assert list(table[table["hparam"] == "beta"]["value"]) == [0.7, 0.9]
    both = table[table["hparam"] == "alpha,beta"]
    assert list(both["value"]) == [(0.3, 0.7), (0.5, 0.5)]


def test_sensitivity_table_groups_a_swept_composite_by_its_terms():
    def run(terms, seed, dsc):
        return {**IDENT, "category": "combination", "loss": "sum", "status": "completed"} | {
            "seed": seed,
            "params": {"terms": terms},
            "dsc": dsc,
        }

    default, other = losses.loss_info("sum").hparams["terms"], [{"name": "dice"}, {"name": "ce"}]
    table = sensitivity_table(pd.DataFrame([run(default, 0, 0.6), run(other, 0, 0.7), run(other, 1, 0.8)]))
    assert list(table["hparam"]) == ["terms", "terms"]
    assert sorted(zip(table["default"], table["mean"], table["n"], strict=True)) == [
        (False, pytest.approx(0.75), 2),
        (True, pytest.approx(0.6), 1),
    ]


def test_by_size_groups_classes_by_the_sizes_in_the_records_of_a_run_on_test_dataset(tmp_path, capsys):
    """A Synthia-trained run evaluated on Cityscapes (``data.test_dataset``): the sizes are the
    records' (what the evaluator counted on the evaluated data), whatever the training data's."""
    sizes = {"road": 5000, "car": 800, "sky": 3000, "pole": 20, "sign": 40, "person": 300}
    classes = list(sizes)
    for seed in (0, 1):
        per_case = [
            {
                "case": f"img{k}",
                "class": i,
                "iou": 0.1 * (i + 1),
                "dsc": 0.5,
                "empty": "none",
                "gt_size": size * k,
            }
            for k in range(3)  # img0 lacks every class (size 0): not counted in the means
            for i, size in enumerate(sizes.values())
        ]
        rec = {
            "name": f"s{seed}",
            "status": "completed",
            "loss": "ce",
            "data": "synthia",
            "eval_data": "cityscapes",
            "model": "m",
            "seed": seed,
            "config": {
                "name": "s2c",
                "data": {"name": "synthia", "protocol": "cityscapes", "test_dataset": {"name": "cityscapes"}},
            },
            "metrics": {
                "protocol": "cityscapes",
                "mean": {"iou": 0.35, "dsc": 0.5},
                "per_class": {c: {"iou": 0.1 * (i + 1), "dsc": 0.5} for i, c in enumerate(classes)},
                "per_case": per_case,
            },
        }
        (tmp_path / "runs" / f"s{seed}").mkdir(parents=True)
        (tmp_path / "runs" / f"s{seed}" / "record.json").write_text(json.dumps(rec))
    out = tmp_path / "tables"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--by-size", "--no-plots"]) == 0
    row = pd.read_csv(out / "sizes.csv").iloc[0]
    assert (row["small classes"], row["medium classes"], row["large classes"]) == (
        "pole sign",
        "person car",
        "sky road",
    )
    iou = {c: 0.1 * (i + 1) for i, c in enumerate(classes)}
    assert row["small"] == pytest.approx((iou["pole"] + iou["sign"]) / 2) and row["metric"] == "iou"
    assert row["large"] == pytest.approx((iou["sky"] + iou["road"]) / 2)


def test_by_size_on_records_without_sizes_names_the_run_and_says_to_re_evaluate(tmp_path):
    write(tmp_path / "runs", "ce0", "ce", 0)
    write(tmp_path / "runs", "old", "ce", 1, gt_size=None)
    sizes = section_sizes(load_cases([tmp_path / "runs" / "ce0"]))
    assert list(sizes) == [("sweep", "synthetic", "default", "tiny")]
    assert sizes[("sweep", "synthetic", "default", "tiny")].to_dict() == {"liver": 100, "aorta": 10}
    with pytest.raises(ValueError, match=r"runs/old: its record has no gt_size .* re-evaluate the run"):
        main([str(tmp_path / "runs"), "--out", str(tmp_path / "t"), "--by-size", "--no-plots"])
