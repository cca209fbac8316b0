"""The dataset registry: registered classes, options read from their constructors, clear errors."""

from __future__ import annotations

import re

import pytest

import datasets
from datasets.synapse import SynapseDataset
from datasets.synthetic import SyntheticDataset

TINY = {"train_cases": 1, "test_cases": 1, "depth": 2, "size": 16, "seed": 0}


def test_list_datasets_filters_by_glob():
    assert datasets.list_datasets() == ["cityscapes", "synapse", "synthetic", "synthia"]
    assert datasets.list_datasets("syn*") == ["synapse", "synthetic", "synthia"]
    assert datasets.list_datasets("nothing*") == []


def test_options_and_defaults_come_from_the_constructors():
    synapse = {"img_size": 224, "augment": None, "seed": 0, "label_noise": None, "ignore_background": False}
    street = {"scale": (0.5, 2.0), "augment": None, "seed": 0, "label_noise": None}
    assert datasets.dataset_info("synapse").options == synapse
    # a subclass forwarding **options has its base class's options, with its own defaults winning
    assert datasets.dataset_info("synthetic").options == {**synapse, "img_size": 64, "generator": None}
    assert datasets.dataset_info("cityscapes").options == {**street, "crop_size": (512, 1024), "resize": None}
    assert datasets.dataset_info("synthia").options == {**street, "crop_size": (512, 512)}
    assert datasets.dataset_info("synthetic").factory is SyntheticDataset


def test_errors_name_the_dataset_and_the_choices(tmp_path):
    with pytest.raises(
        KeyError, match="unknown dataset 'synapes'; registered: cityscapes, synapse, synthetic, synthia"
    ):
        datasets.create_dataset("synapes", root=tmp_path, split="train")
    with pytest.raises(ValueError, match="dataset 'synapse': unknown split 'val'; valid: train, test"):
        datasets.create_dataset("synapse", root=tmp_path, split="val")
    valid = r"\['augment', 'crop_size', 'label_noise', 'scale', 'seed'\]"
    with pytest.raises(
        ValueError, match=rf"dataset 'synthia': unknown option\(s\) \['resize'\]; valid: {valid}"
    ):
        datasets.create_dataset("synthia", root=tmp_path, split="val", resize=[512, 512])
    with pytest.raises(FileNotFoundError, match=r"dataset 'synapse': data root .*nope' does not exist"):
        datasets.create_dataset("synapse", root=tmp_path / "nope", split="train")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="dataset 'synapse' is registered twice"):
        datasets.register_dataset("synapse", reference="", splits=("train",))(SynapseDataset)


def test_synthetic_is_generated_and_read_with_its_own_defaults_and_remedy(tmp_path):
    root = tmp_path / "tiny"
    train = datasets.create_dataset("synthetic", root=root, split="train", generator=TINY)
    assert isinstance(train, SynapseDataset) and train.size == (64, 64) and train.augment_enabled
    assert train[0]["image"].shape == (1, 64, 64)
    test = datasets.create_dataset("synthetic", root=root, split="test", generator=TINY, img_size=16)
    assert not test.augment_enabled and len(test) == 2
    (root / "test_vol_h5" / "case0002.npy.h5").write_bytes(b"not HDF5")
    with pytest.raises(
        OSError, match=rf"case0002\.npy\.h5 .*; delete {re.escape(str(root))} to have it generated again"
    ):
        datasets.create_dataset("synthetic", root=root, split="test", generator=TINY)
