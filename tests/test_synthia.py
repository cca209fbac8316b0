"""SYNTHIA-RAND-CITYSCAPES: 16-bit labels, id mapping, deterministic split, padding, errors."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_formats import write_png, write_synthia

import datasets
from datasets.cityscapes import CLASS_NAMES
from datasets.synthia import split_of

STEMS = [f"{i:07d}" for i in range(20)]
VAL = ["0000011", "0000013"]  # crc32(stem) % 10 == 0 among STEMS
#: the mapping of the reference digest (DAFormer), written out independently of the module
DIGEST = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10}
DIGEST |= {10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}


@pytest.fixture
def tree(tmp_path):
    return tmp_path, write_synthia(tmp_path, STEMS, seed=5)


def test_class_ids_are_read_from_the_red_channel_of_16_bit_labels_and_mapped(tree):
    root, ids = tree
    ds = datasets.create_dataset("synthia", root=root, split="val")
    assert ds.class_names == CLASS_NAMES and [ds[i]["case"] for i in range(len(ds))] == VAL
    for i, stem in enumerate(VAL):
        expected = np.vectorize(lambda v: DIGEST.get(int(v), 255))(ids[stem])
        label = ds[i]["label"].numpy()
        np.testing.assert_array_equal(label[:40, :72], expected)


def test_split_rule_is_a_fixed_hash_of_the_file_name(tree):
    root, _ = tree
    train = datasets.create_dataset("synthia", root=root, split="train")
    everything = datasets.create_dataset("synthia", root=root, split="all")
    assert [split_of(s) for s in VAL] == ["val", "val"]
    assert [train[i]["case"] for i in range(len(train))] == [s for s in STEMS if s not in VAL]
    assert len(everything) == len(STEMS)
    assert train.augment_enabled and everything.augment_enabled


def test_evaluation_items_are_padded_to_multiples_of_32_with_ignore(tree):
    root, _ = tree
    item = datasets.create_dataset("synthia", root=root, split="val")[0]
    assert item["image"].shape == (3, 64, 96) and item["label"].shape == (64, 96)
    assert (item["label"][40:] == 255).all() and (item["label"][:, 72:] == 255).all()
    assert (item["image"][:, 40:] == 0).all() and (item["image"][:, :, 72:] == 0).all()


def test_training_items_are_crops_of_the_configured_size(tree):
    root, _ = tree
    item = datasets.create_dataset("synthia", root=root, split="train", crop_size=[32, 64], scale=[1.0, 1.0])[
        3
    ]
    assert item["image"].shape == (3, 32, 64) and set(item["label"].unique().tolist()) <= {*range(19), 255}


def test_eval_subsets_are_the_standard_16_and_13_classes(tree):
    subsets = datasets.create_dataset("synthia", root=tree[0], split="val").eval_subsets
    names16 = [CLASS_NAMES[t] for t in subsets["mIoU16"]]
    names13 = [CLASS_NAMES[t] for t in subsets["mIoU13"]]
    assert len(names16) == 16 and set(CLASS_NAMES) - set(names16) == {"terrain", "truck", "train"}
    assert len(names13) == 13 and set(names16) - set(names13) == {"wall", "fence", "pole"}


def test_wrong_layout_names_the_expected_folder(tmp_path):
    (tmp_path / "RGB").mkdir()
    with pytest.raises(FileNotFoundError, match=r"GT/LABELS .*layout: RGB/\*\.png and GT/LABELS/\*\.png"):
        datasets.create_dataset("synthia", root=tmp_path, split="train")


def test_unpaired_files_and_empty_splits_are_named(tree, tmp_path_factory):
    root, _ = tree
    (root / "GT/LABELS/0000011.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image.* without a label file: .*RGB/0000011\.png"):
        datasets.create_dataset("synthia", root=root, split="val")
    empty = tmp_path_factory.mktemp("empty")
    (empty / "RGB").mkdir()
    (empty / "GT/LABELS").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="'all' split is empty"):
        datasets.create_dataset("synthia", root=empty, split="all")


def test_unknown_class_ids_and_wrong_channel_counts_are_named_on_load(tree):
    root, ids = tree
    bad = np.stack([np.zeros_like(ids["0000013"]), np.zeros_like(ids["0000013"]), ids["0000013"]], -1)
    bad[0, 0, 2] = 23
    write_png(root / "GT/LABELS/0000013.png", bad)
    write_png(root / "GT/LABELS/0000011.png", ids["0000011"])  # single channel
    ds = datasets.create_dataset("synthia", root=root, split="val")
    with pytest.raises(ValueError, match=r"0000011\.png: expected a 3-channel 16-bit SYNTHIA"):
        ds[0]
    with pytest.raises(ValueError, match=r"0000013\.png: label values \[23\] are outside the known ids 0–22"):
        ds[1]
