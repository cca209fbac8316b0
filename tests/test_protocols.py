"""bench.protocols: the empty-case table of every protocol, per-case scores, summaries."""

from __future__ import annotations

import functools
import json
import math
import pickle

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary

from bench.metrics import confusion_matrix, diagonal
from bench.protocols import (
    NSD_TOLERANCE,
    get_protocol,
    list_protocols,
    metric_settings,
    score_case,
    summarize,
    units_for,
)
from datasets import IGNORE_INDEX

NAN = math.nan
SHAPE = (6, 24, 20)
SPACING = (2.5, 0.8, 0.7)


def four_kinds_case():
    """Class 1 in both, 2 only in gt (pred empty), 3 only in pred (gt empty), 4 in neither."""
    gt, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    gt[1:4, 3:10, 4:12] = 1
    pred[1:5, 4:11, 5:12] = 1
    gt[2:5, 15:20, 2:6] = 2
    pred[0:2, 14:22, 14:19] = 3
    return pred, gt


def by_class(rows):
    return {r["class"]: r for r in rows}


def scores(row):
    return tuple(row[k] for k in ("dsc", "iou", "hd95", "hd95_pred_gt", "hd95_gt_pred"))


def assert_scores(row, expected):
    assert scores(row) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize("protocol", ["default", "cityscapes"])
@pytest.mark.parametrize("spacing", [None, SPACING])
def test_default_rule_excludes_both_empty_and_penalises_one_empty_with_the_diagonal(protocol, spacing):
    pred, gt = four_kinds_case()
    rows = by_class(
        score_case(protocol, pred, gt, classes=[1, 2, 3, 4], spacing=spacing, ignore_index=IGNORE_INDEX)
    )
    diag = diagonal(SHAPE, spacing)
    assert [rows[c]["empty"] for c in (1, 2, 3, 4)] == ["none", "pred", "gt", "both"]
    assert_scores(rows[2], (0.0, 0.0, diag, diag, diag))
    assert_scores(rows[3], (0.0, 0.0, diag, diag, diag))
    assert_scores(rows[4], (NAN,) * 5)
    if protocol == "default":  # NSD 0 and ASSD the diagonal when one mask is empty; NaN when both
        assert [v for c in (2, 3) for v in (rows[c]["nsd"], rows[c]["assd"])] == pytest.approx(
            [0.0, diag] * 2
        )
        assert math.isnan(rows[4]["nsd"]) and math.isnan(rows[4]["assd"])
    else:  # Boundary IoU: 0 when one mask is empty, NaN (no boundary at all) when both
        assert (rows[2]["biou"], rows[3]["biou"]) == (0.0, 0.0) and math.isnan(rows[4]["biou"])
        assert rows[4]["biou_union"] == 0 and rows[2]["biou_union"] > 0
    p, g = pred == 1, gt == 1
    assert rows[1]["dsc"] == pytest.approx(medpy_binary.dc(p, g))
    assert rows[1]["iou"] == pytest.approx(medpy_binary.jc(p, g))
    assert rows[1]["hd95"] == pytest.approx(medpy_binary.hd95(p, g, voxelspacing=spacing), rel=1e-6)


def test_transunet_rule_reproduces_calculate_metric_percase_in_voxels():
    pred, gt = four_kinds_case()
    rows = by_class(
        score_case("transunet", pred, gt, classes=[1, 2, 3, 4], spacing=SPACING, ignore_index=IGNORE_INDEX)
    )
    assert [rows[c]["empty"] for c in (1, 2, 3, 4)] == ["none", "pred", "gt", "both"]
    assert_scores(rows[2], (0.0, 0.0, 0.0, 0.0, 0.0))  # a miss scores HD95 0
    assert_scores(rows[3], (1.0, 1.0, 0.0, 0.0, 0.0))  # a false positive on an absent organ scores 1
    assert_scores(rows[4], (0.0, 0.0, 0.0, 0.0, 0.0))  # a correct absence scores 0
    p, g = pred == 1, gt == 1
    assert rows[1]["dsc"] == pytest.approx(medpy_binary.dc(p, g))
    assert rows[1]["hd95"] == pytest.approx(medpy_binary.hd95(p, g), rel=1e-6)  # spacing ignored
    assert rows[1]["hd95"] != pytest.approx(medpy_binary.hd95(p, g, voxelspacing=SPACING), rel=1e-3)


EXTRA_KEYS = {
    "default": {"nsd", "assd"},
    "transunet": set(),
    "cityscapes": {"biou", "biou_inter", "biou_union"},
}


@pytest.mark.parametrize("protocol", list_protocols())
def test_rows_hold_plain_floats_and_the_documented_keys(protocol):
    pred, gt = four_kinds_case()
    for row in score_case(
        protocol, pred, gt, classes=[1, 2, 3, 4], spacing=SPACING, ignore_index=IGNORE_INDEX
    ):
        base = {"class", "dsc", "iou", "hd95", "hd95_pred_gt", "hd95_gt_pred", "empty"}
        assert set(row) == base | EXTRA_KEYS[protocol]
        assert type(row["class"]) is int and all(type(v) is float for v in scores(row))
        assert all(type(row[k]) is (int if k.startswith("biou_") else float) for k in EXTRA_KEYS[protocol])


def test_per_class_scores_of_a_multiclass_volume_match_medpy_per_class():
    rng = np.random.default_rng(0)
    shape = (12, 40, 36)
    gt = rng.integers(0, 4, shape).astype(np.int64)
    gt[:, :10] = 0
    pred = np.where(rng.random(shape) < 0.8, gt, rng.integers(0, 4, shape))
    tolerance = {0: 0.5, 1: 1.0, 2: 2.5, 3: 3.0}
    rows = score_case(
        "default",
        pred,
        gt,
        classes=[0, 1, 2, 3],
        spacing=SPACING,
        connectivity=3,
        nsd_tolerance=tolerance,
        ignore_index=IGNORE_INDEX,
    )
    for row in rows:
        p, g = pred == row["class"], gt == row["class"]
        assert row["dsc"] == pytest.approx(medpy_binary.dc(p, g))
        expected = medpy_binary.hd95(p, g, voxelspacing=SPACING, connectivity=3)
        assert row["hd95"] == pytest.approx(expected, rel=1e-6)
        expected = medpy_binary.assd(p, g, voxelspacing=SPACING, connectivity=3)
        assert row["assd"] == pytest.approx(expected, rel=1e-6)
        assert 0 < row["nsd"] < 1
        assert max(row["hd95_pred_gt"], row["hd95_gt_pred"]) >= row["hd95"]


def test_multiclass_image_with_ignored_pixels_matches_medpy_on_the_masked_classes():
    rng = np.random.default_rng(1)
    gt = np.kron(rng.integers(0, 5, (6, 8)), np.ones((7, 9), np.int64))  # blocky regions, 42x72
    pred = np.where(rng.random(gt.shape) < 0.9, gt, rng.integers(0, 5, gt.shape))
    gt[30:, 40:] = IGNORE_INDEX
    valid = gt != IGNORE_INDEX
    rows = score_case(
        "cityscapes",
        pred.astype(np.uint8),
        gt,
        classes=range(5),
        spacing=None,
        connectivity=2,
        ignore_index=IGNORE_INDEX,
    )
    for row in rows:
        p, g = (pred == row["class"]) & valid, gt == row["class"]
        assert row["iou"] == pytest.approx(medpy_binary.jc(p, g))
        assert row["hd95"] == pytest.approx(medpy_binary.hd95(p, g, connectivity=2), rel=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI deprecates one of its own arguments
def test_nsd_of_each_class_equals_monai_with_per_class_tolerances_and_ignored_voxels():
    from monai.metrics import compute_surface_dice

    rng = np.random.default_rng(3)
    shape = (10, 30, 28)
    gt = np.kron(rng.integers(0, 4, (2, 5, 4)), np.ones((5, 6, 7), np.int64))
    pred = np.where(rng.random(shape) < 0.9, gt, rng.integers(0, 4, shape))
    gt[:, 24:, :] = IGNORE_INDEX
    tolerance = {1: 0.8, 2: 2.5, 3: 3.0}
    rows = score_case(
        "default",
        pred,
        gt,
        classes=[1, 2, 3],
        spacing=SPACING,
        nsd_tolerance=tolerance,
        ignore_index=IGNORE_INDEX,
    )
    onehot = [torch.from_numpy(np.stack([a == c for c in range(4)]))[None] for a in (pred, gt)]
    valid = torch.from_numpy(gt != IGNORE_INDEX)
    onehot[0] = onehot[0] & valid  # as MONAI's ignore_index does: ignored voxels leave pred too
    expected = compute_surface_dice(*onehot, list(tolerance.values()), spacing=list(SPACING))[0]  # 1-3
    assert [r["nsd"] for r in rows] == pytest.approx(expected.tolist(), rel=1e-6)


def test_metric_settings_resolve_tolerances_by_class_name_and_reject_bad_values():
    names = ("background", "liver", "kidney")
    assert metric_settings({}, names) == {
        "nsd_tolerance": dict.fromkeys(range(3), NSD_TOLERANCE),
        "dilation_ratio": 0.02,
    }
    got = metric_settings({"nsd_tolerance": {"kidney": 2.5}, "boundary_dilation_ratio": 0.01}, names)
    assert got == {"nsd_tolerance": {0: NSD_TOLERANCE, 1: NSD_TOLERANCE, 2: 2.5}, "dilation_ratio": 0.01}
    assert metric_settings({"nsd_tolerance": 3}, names)["nsd_tolerance"] == dict.fromkeys(range(3), 3.0)
    for cfg, message in (
        ({"nsd_tolerance": {"lung": 1.0}}, "unknown class.*lung"),
        ({"nsd_tolerance": -1.0}, "nsd_tolerance for 'background' is -1.0"),
        ({"nsd_tolerance": {"liver": "2mm"}}, "nsd_tolerance for 'liver'"),
        ({"boundary_dilation_ratio": 0}, "boundary_dilation_ratio is 0"),
    ):
        with pytest.raises(ValueError, match=message):
            metric_settings(cfg, names)


def test_ignored_gt_voxels_are_excluded_from_both_masks():
    pred, gt = np.zeros((30, 40), np.int64), np.zeros((30, 40), np.int64)
    gt[5:15, 5:15] = 1
    pred[6:16, 5:14] = 1
    reference = score_case("default", pred, gt, classes=[1], spacing=None, ignore_index=IGNORE_INDEX)
    pred_fp, gt_ignored = pred.copy(), gt.copy()
    gt_ignored[20:, :] = IGNORE_INDEX
    pred_fp[22:28, 30:38] = 1  # a false positive that lies entirely in the ignored region
    assert (
        score_case("default", pred_fp, gt_ignored, classes=[1], spacing=None, ignore_index=IGNORE_INDEX)
        == reference
    )
    gt_only_ignored = np.full_like(gt, IGNORE_INDEX)
    row = score_case("default", pred, gt_only_ignored, classes=[1], spacing=None, ignore_index=IGNORE_INDEX)[
        0
    ]
    assert row["empty"] == "both"


def test_score_case_can_run_in_worker_processes():
    job = pickle.loads(
        pickle.dumps(
            functools.partial(score_case, "default", classes=[1], spacing=None, ignore_index=IGNORE_INDEX)
        )
    )
    pred, gt = four_kinds_case()
    assert job(pred[0], gt[0]) == score_case(
        "default", pred[0], gt[0], classes=[1], spacing=None, ignore_index=IGNORE_INDEX
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "nnunet"}, "unknown evaluation protocol 'nnunet'"),
        ({"gt": np.zeros((6, 24), np.uint8)}, "same shape"),
        ({"pred": np.zeros(SHAPE, np.float32)}, "pred must be an integer label array"),
        ({"classes": [1, IGNORE_INDEX]}, "classes must be"),
        ({"classes": []}, "classes must be"),
        ({"classes": [1, 1]}, "classes must be"),
        ({"spacing": (1.0, 1.0)}, "spacing must hold one positive"),
        ({"connectivity": 4}, "connectivity"),
    ],
)
def test_bad_score_case_input_gets_a_clear_error(kwargs, message):
    pred, gt = four_kinds_case()
    args = {"protocol": "default", "pred": pred, "gt": gt, "classes": [1], "spacing": None}
    args |= {"ignore_index": IGNORE_INDEX, **kwargs}
    with pytest.raises(ValueError, match=message):
        score_case(args.pop("protocol"), args.pop("pred"), args.pop("gt"), **args)


def test_units_follow_the_protocol():
    assert units_for("default", SPACING) == "mm"
    assert units_for("default", None) == "px"
    assert units_for("cityscapes", None) == "px"
    assert units_for("transunet", SPACING) == "voxel"


def test_protocols_are_registered_objects_holding_their_rules():
    assert list_protocols() == ["default", "transunet", "cityscapes"]
    default, transunet, city = (get_protocol(n) for n in list_protocols())
    assert [p.headline for p in (default, transunet, city)] == ["dsc", "dsc", "iou"]
    assert [p.scores for p in (default, transunet, city)] == [
        ("dsc", "iou", "hd95", "nsd", "assd"),
        ("dsc", "iou", "hd95"),
        ("dsc", "iou", "hd95", "biou"),
    ]
    assert (default.empty_rule.excluded, default.empty_rule.penalised) == (("both",), ("pred", "gt"))
    assert (transunet.empty_rule.excluded, transunet.empty_rule.penalised) == ((), ("both", "pred", "gt"))
    assert city.empty_rule == default.empty_rule
    assert [(p.voxel_units, p.dataset_iou, p.boundary_iou) for p in (default, transunet, city)] == [
        (False, False, False),
        (True, False, False),
        (False, True, True),
    ]


def test_an_unknown_protocol_error_names_the_key_the_value_and_the_choices():
    message = r"protocol 'nnunet' \(data.protocol\); choose one of default, transunet, cityscapes"
    with pytest.raises(ValueError, match=message):
        get_protocol("nnunet")


def row(case, c, dsc, iou, hd, empty="none", **extra):
    return {
        "case": case,
        "class": c,
        "dsc": dsc,
        "iou": iou,
        "hd95": hd,
        "hd95_pred_gt": hd,
        "hd95_gt_pred": hd,
        "nsd": dsc,  # hand-made: NSD follows DSC, ASSD half of HD95
        "assd": hd / 2,
        "empty": empty,
        **extra,
    }


NAMES = ("background", "liver", "kidney", "spleen")
ROWS = [
    row("a", 1, 0.8, 0.6, 4.0),
    row("b", 1, 0.6, 0.4, 8.0),
    row("c", 1, 0.0, 0.0, 100.0, "pred"),
    row("a", 2, 0.9, 0.8, 2.0),
    row("b", 2, NAN, NAN, NAN, "both"),
    row("c", 2, 0.0, 0.0, 90.0, "gt"),
    row("a", 3, NAN, NAN, NAN, "both"),
]


def test_summarize_means_counts_and_per_class_on_hand_made_rows():
    out = summarize("default", ROWS, class_names=NAMES, units="mm")
    assert (out["protocol"], out["units"]) == ("default", "mm")
    liver, kidney, spleen = (out["per_class"][n] for n in ("liver", "kidney", "spleen"))
    assert (liver["dsc"], liver["iou"], liver["hd95"]) == pytest.approx((1.4 / 3, 1.0 / 3, 112 / 3))
    assert (liver["n"], liver["excluded"], liver["penalised"]) == (3, 0, 1)
    assert (kidney["dsc"], kidney["iou"], kidney["hd95"]) == pytest.approx((0.45, 0.4, 46.0))
    assert (kidney["n"], kidney["excluded"], kidney["penalised"]) == (3, 1, 1)
    assert math.isnan(spleen["dsc"]) and (spleen["n"], spleen["excluded"]) == (1, 1)
    assert "background" not in out["per_class"]
    assert (liver["nsd"], liver["assd"], kidney["assd"]) == pytest.approx((1.4 / 3, 56 / 3, 23.0))
    assert out["mean"] == pytest.approx(
        {
            "dsc": (1.4 / 3 + 0.45) / 2,
            "iou": (1 / 3 + 0.4) / 2,
            "hd95": (112 / 3 + 46) / 2,
            "nsd": (1.4 / 3 + 0.45) / 2,
            "assd": (112 / 3 + 46) / 4,
        }
    )
    assert out["empty"] == {"excluded": 2, "penalised": 2, "both": 2, "pred": 1, "gt": 1}
    assert out["per_case"] == ROWS and "confusion" not in out
    assert out["subsets"] == {}


def test_summarize_subset_means_skip_nan_and_classes_without_rows():
    subsets = {"Organs": [1, 2, 3], "Liver": [1], "Background": [0]}
    out = summarize("default", ROWS, class_names=NAMES, units="mm", subsets=subsets)
    organs = out["subsets"]["organs"]  # spleen is NaN (its one row excluded): the mean of liver and kidney
    assert organs["classes"] == ["liver", "kidney", "spleen"]
    assert set(organs) == {"classes", "dsc", "iou", "hd95", "nsd", "assd"}
    assert (organs["dsc"], organs["hd95"]) == pytest.approx(((1.4 / 3 + 0.45) / 2, (112 / 3 + 46) / 2))
    liver = out["per_class"]["liver"]
    assert out["subsets"]["liver"] == {"classes": ["liver"], **{k: liver[k] for k in out["mean"]}}
    assert math.isnan(out["subsets"]["background"]["dsc"])  # no row of background at all
    with pytest.raises(
        ValueError, match=r"class subset 'Far' holds class id\(s\) \[7\] outside the 4 classes"
    ):
        summarize("default", ROWS, class_names=NAMES, units="mm", subsets={"Far": [1, 7]})


def test_summarize_transunet_counts_every_rule_set_row_and_reports_voxels():
    rows = [
        row("a", 1, 0.8, 0.6, 4.0),
        row("b", 1, 0.0, 0.0, 0.0, "pred"),
        row("c", 1, 0.0, 0.0, 0.0, "both"),
    ]
    out = summarize("transunet", rows, class_names=NAMES, units="mm")
    assert out["units"] == "voxel" and set(out["mean"]) == {"dsc", "iou", "hd95"}  # the literature's
    assert out["per_class"]["liver"]["dsc"] == pytest.approx(0.8 / 3)
    assert out["empty"] == {"excluded": 0, "penalised": 2, "both": 1, "pred": 1, "gt": 0}


def test_summarize_cityscapes_headline_is_the_dataset_level_iou():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm = confusion_matrix(pred, target, 4, ignore_index=IGNORE_INDEX).numpy()
    names = ("road", "sidewalk", "building", "wall")
    counts = {0: (3, 4), 1: (1, 5), 2: (0, 2)}
    rows = [
        row("img", c, 0.5, 0.5, 1.0, biou=0.5, biou_inter=i, biou_union=u) for c, (i, u) in counts.items()
    ]
    rows += [row("img", 3, NAN, NAN, NAN, "both", biou=NAN, biou_inter=0, biou_union=0)]
    rows += [row("img2", 0, 0.5, 0.5, 1.0, biou=0.5, biou_inter=5, biou_union=8)]
    out = summarize("cityscapes", rows, class_names=names, units="px", confusion=cm)
    biou = {"road": 8 / 12, "sidewalk": 1 / 5, "building": 0.0}  # counts summed over images, then divided
    assert {n: out["per_class"][n]["biou"] for n in biou} == pytest.approx(biou)
    assert math.isnan(out["per_class"]["wall"]["biou"])
    assert out["mean"]["biou"] == pytest.approx(np.mean(list(biou.values())))
    assert set(out["mean"]) == {"dsc", "iou", "hd95", "biou"}
    road, sidewalk, building = 1 / 3, 3 / 4, 1 / 2  # TP / (TP + FP + FN) over the whole dataset
    assert out["mean"]["iou"] == pytest.approx((road + sidewalk + building) / 3)
    assert out["per_class"]["road"]["iou"] == pytest.approx(road)
    assert out["per_class"]["road"]["dsc"] == 0.5  # per-image DSC, default rule
    assert math.isnan(out["per_class"]["wall"]["iou"])
    assert out["confusion"]["miou"] == pytest.approx(out["mean"]["iou"])
    assert out["confusion"]["pixel_acc"] == pytest.approx(5 / 7)


@pytest.mark.parametrize(
    ("protocol", "rows", "kwargs", "message"),
    [
        ("majority", ROWS, {}, "unknown evaluation protocol"),
        ("default", [], {}, "no rows"),
        ("cityscapes", ROWS, {}, "needs the dataset confusion matrix"),
        ("default", [{k: v for k, v in ROWS[0].items() if k != "case"}], {}, "has no 'case'"),
        ("default", [row("a", 7, 0.5, 0.5, 1.0)], {}, "class 7, outside the 4 class names"),
        ("default", ROWS, {"confusion": np.zeros((3, 3))}, "3x3 but there are 4 class names"),
    ],
)
def test_bad_summarize_input_gets_a_clear_error(protocol, rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        summarize(protocol, rows, class_names=NAMES, units="px", **kwargs)


@pytest.mark.slow
def test_a_run_records_each_protocols_scores_and_checks_the_settings_before_training(tmp_path, data_root):
    from helpers import TINY, make_cfg

    from bench.run import run

    overrides = [
        "+loss=ce",
        "+data=synthetic",
        *TINY,
        "trainer.max_steps=2",
        "data.protocol=[default,cityscapes]",
    ]
    cfg = make_cfg([*overrides, "data.nsd_tolerance={liver: 2.0}"], data_root=data_root, output_dir=tmp_path)
    record = run(cfg, tmp_path / "ok", "ok")
    default, city = record["metrics"], record["more_metrics"][0]
    assert set(default["mean"]) == {"dsc", "iou", "hd95", "nsd", "assd"}
    assert set(city["mean"]) == {"dsc", "iou", "hd95", "biou"}
    assert default["per_class"]["liver"]["n"] == 2 and 0 <= default["mean"]["nsd"] <= 1
    ids = {name: i + 1 for i, name in enumerate(city["per_class"])}  # eval classes 1-8, in order
    for name, scores in city["per_class"].items():  # dataset-level: counts summed over the cases
        rows = [r for r in city["per_case"] if r["class"] == ids[name]]
        inter, union = sum(r["biou_inter"] for r in rows), sum(r["biou_union"] for r in rows)
        assert scores["biou"] == pytest.approx(inter / union if union else NAN, nan_ok=True)
    bad = make_cfg([*overrides, "data.nsd_tolerance=-1"], data_root=data_root, output_dir=tmp_path)
    with pytest.raises(ValueError, match="nsd_tolerance for 'background' is -1"):
        run(bad, tmp_path / "bad", "bad")
    assert json.loads((tmp_path / "bad" / "record.json").read_text())["history"] is None  # never trained
