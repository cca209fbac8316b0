"""bench.evaluate: what the evaluator writes for the tables — ground-truth sizes per case and class,
class-subset means — on tiny datasets whose image is the prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bench.evaluate import evaluate
from datasets import IGNORE_INDEX, SegDataset

X = IGNORE_INDEX
NAMES = ("road", "car", "tree", "sky")
K = len(NAMES)
# two 2x4 images; "sky" is in neither label nor prediction (NaN under the default rule)
LABELS = [np.array([[0, 0, 1, 1], [2, 2, X, 1]]), np.array([[0, 0, 0, 0], [1, 1, 2, X]])]
PREDS = [np.array([[0, 1, 1, 1], [2, 0, 0, 1]]), np.array([[0, 0, 0, 1], [1, 1, 2, 2]])]
SUBSETS = {"mIoU2": [0, 1], "Nature": [2, 3]}


class Images(SegDataset):
    """2D cases whose image is the one-hot prediction (see :class:`Echo`)."""

    class_names = NAMES

    def __init__(self, preds, labels, cases=None):
        super().__init__("test")
        self.preds, self.labels = preds, labels
        self.cases = cases or [f"img{i}" for i in range(len(labels))]

    def __len__(self):
        return len(self.labels)

    def load(self, i):
        image = np.eye(K, dtype=np.float32)[self.preds[i]].transpose(2, 0, 1)
        index = self.cases[:i].count(self.cases[i])  # slice position inside its case
        return {"image": image, "label": self.labels[i], "case": self.cases[i], "index": index}


class WithSubsets(Images):
    eval_subsets = SUBSETS


class Volumes(Images):
    volumetric = True

    def case_of(self, i):
        return self.cases[i]


class Echo(nn.Module):
    def forward(self, x):
        return {"logits": x}


def run(dataset, protocols=("default", "cityscapes"), **kwargs):
    blocks = evaluate(
        Echo(),
        dataset,
        protocols=list(protocols),
        eval_classes=None,
        device=torch.device("cpu"),
        batch_size=2,
        amp=False,
        channels_last=False,
        **kwargs,
    )
    return dict(zip(protocols, blocks, strict=True))


def test_subset_means_equal_a_hand_computation_skipping_nan_classes():
    blocks = run(WithSubsets(PREDS, LABELS))
    # per-image DSC (ignored pixels leave the prediction): road 1/2, 6/7; car 6/7, 4/5; tree 2/3, 1
    road, car, tree = (1 / 2 + 6 / 7) / 2, (6 / 7 + 4 / 5) / 2, (2 / 3 + 1) / 2
    for block in blocks.values():
        assert set(block["subsets"]) == {"miou2", "nature"}
        assert block["subsets"]["miou2"]["classes"] == ["road", "car"]
        assert block["subsets"]["nature"]["classes"] == ["tree", "sky"]
        assert block["subsets"]["miou2"]["dsc"] == pytest.approx((road + car) / 2)
        assert block["subsets"]["nature"]["dsc"] == pytest.approx(tree)  # sky is NaN: skipped
        assert math.isnan(block["per_class"]["sky"]["dsc"])
        assert set(block["subsets"]["miou2"]) == {"classes", *block["mean"]}  # the protocol's scores
    default = blocks["default"]
    assert default["subsets"]["miou2"]["iou"] == pytest.approx(
        (np.mean([1 / 3, 3 / 4]) + np.mean([3 / 4, 2 / 3])) / 2  # per-image IoU, then per class
    )
    # cityscapes: dataset-level IoU from the confusion matrix — road 4/7, car 5/7, tree 2/3
    city = blocks["cityscapes"]
    assert [city["per_class"][n]["iou"] for n in ("road", "car", "tree")] == pytest.approx(
        [4 / 7, 5 / 7, 2 / 3]
    )
    assert city["subsets"]["miou2"]["iou"] == pytest.approx((4 / 7 + 5 / 7) / 2)
    assert city["subsets"]["nature"]["iou"] == pytest.approx(2 / 3)


def test_subsets_default_to_none_and_can_be_given_by_the_caller():
    assert run(Images(PREDS, LABELS))["default"]["subsets"] == {}
    given = run(Images(PREDS, LABELS), protocols=("cityscapes",), subsets={"Cars": [1]})["cityscapes"]
    car = given["per_class"]["car"]
    assert given["subsets"] == {"cars": {"classes": ["car"], **{k: car[k] for k in given["mean"]}}}
    assert given["subsets"]["cars"]["iou"] == pytest.approx(5 / 7)


def test_gt_size_of_each_row_counts_the_labels_of_its_case_without_ignored_pixels():
    blocks = run(WithSubsets(PREDS, LABELS))
    expected = {"img0": [2, 3, 2, 0], "img1": [4, 2, 1, 0]}  # by hand: road, car, tree, sky
    for i, case in enumerate(expected):  # and as np.bincount of the valid labels
        valid = LABELS[i][LABELS[i] != X]
        assert np.bincount(valid, minlength=K).tolist() == expected[case]
    for block in blocks.values():
        rows = block["per_case"]
        assert len(rows) == 2 * K
        assert all(type(r["gt_size"]) is int for r in rows)
        assert {(r["case"], r["class"]): r["gt_size"] for r in rows} == {
            (case, c): n for case, sizes in expected.items() for c, n in enumerate(sizes)
        }


def test_gt_size_of_a_volume_sums_its_slices():
    rng = np.random.default_rng(0)
    cases = ["v0", "v0", "v0", "v1", "v1"]  # v0 spans both batches of 2
    labels = [rng.integers(0, K, (6, 5)) for _ in cases]
    for lab in labels:
        lab[rng.random(lab.shape) < 0.2] = X
    preds = [rng.integers(0, K, (6, 5)) for _ in cases]
    block = run(Volumes(preds, labels, cases), protocols=("default",))["default"]
    assert [r["case"] for r in block["per_case"]] == ["v0"] * K + ["v1"] * K
    for case in ("v0", "v1"):
        volume = np.stack([lab for lab, c in zip(labels, cases, strict=True) if c == case])
        sizes = np.bincount(volume[volume != X], minlength=K)
        assert [r["gt_size"] for r in block["per_case"] if r["case"] == case] == sizes.tolist()
    assert block["per_class"]["road"]["n"] == 2  # one row per volume, not per slice
