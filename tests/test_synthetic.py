"""The synthetic set is written in the Synapse/TransUNet layout and read by the Synapse loader."""

import json

import h5py
import numpy as np
import pytest

import datasets
from datasets.synapse import CLASS_NAMES, SynapseDataset
from datasets.synthetic import write_synthetic_synapse

GEN = dict(train_cases=2, test_cases=2, depth=6, size=32, seed=3)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic_synapse(tmp_path_factory.mktemp("s") / "syn", **GEN)


def test_layout_is_the_transunet_one(root):
    assert sorted(p.name for p in root.iterdir()) == [
        "lists",
        "meta.json",
        "spacing.json",
        "test_vol_h5",
        "train_npz",
    ]
    train = (root / "lists" / "train.txt").read_text().split()
    assert train[0] == "case0001_slice000" and len(train) == 2 * 6
    with np.load(root / "train_npz" / "case0001_slice003.npz") as npz:
        assert set(npz.files) == {"image", "label"}
        assert npz["image"].shape == (32, 32) and npz["image"].dtype == np.float32
        assert npz["image"].min() >= 0 and npz["image"].max() <= 1
    assert (root / "lists" / "test_vol.txt").read_text().split() == ["case0003", "case0004"]
    with h5py.File(root / "test_vol_h5" / "case0003.npy.h5") as h5:
        assert h5["image"].shape == h5["label"].shape == (6, 32, 32)
    spacing = json.loads((root / "spacing.json").read_text())
    assert set(spacing) == {f"case{k:04d}" for k in range(1, 5)} and all(
        len(s) == 3 for s in spacing.values()
    )


def test_generation_is_deterministic(root, tmp_path):
    again = write_synthetic_synapse(tmp_path / "again", **GEN)
    for rel in ("train_npz/case0002_slice004.npz", "test_vol_h5/case0004.npy.h5"):
        a, b = (root / rel).read_bytes(), (again / rel).read_bytes()
        if rel.endswith(".npz"):
            assert a == b
    with (
        h5py.File(root / "test_vol_h5/case0004.npy.h5") as x,
        h5py.File(again / "test_vol_h5/case0004.npy.h5") as y,
    ):
        np.testing.assert_array_equal(x["label"][:], y["label"][:])
        np.testing.assert_array_equal(x["image"][:], y["image"][:])


def test_organs_differ_in_size_and_all_appear(root):
    with h5py.File(root / "test_vol_h5" / "case0003.npy.h5") as h5:
        counts = np.bincount(h5["label"][:].ravel(), minlength=9)
    assert (counts[1:] > 0).sum() >= 7  # the small gallbladder may miss a short volume
    assert counts[5] > 10 * counts[1]  # liver ≫ aorta


def test_existing_root_with_other_parameters_is_refused(root):
    with pytest.raises(FileExistsError, match="does not hold synthetic data generated with"):
        write_synthetic_synapse(root, **{**GEN, "seed": 4})


def test_round_trip_through_the_synapse_loader(root):
    train = datasets.create_dataset("synthetic", root=root, split="train", img_size=32, generator=GEN)
    test = datasets.create_dataset("synapse", root=root, split="test", img_size=16)
    assert isinstance(train, SynapseDataset) and train.class_names == CLASS_NAMES
    item = train[3]
    assert item["image"].shape == (1, 32, 32) and item["label"].dtype.is_floating_point is False
    with np.load(root / "train_npz" / "case0001_slice003.npz") as npz:
        raw = SynapseDataset(root, "train", img_size=32, augment=False)[3]
        np.testing.assert_array_equal(raw["label"].numpy(), npz["label"])
        np.testing.assert_allclose(raw["image"][0].numpy(), npz["image"], atol=1e-6)
    # test items: resized image, native label, case id, slice index, spacing from the sidecar
    item = test[7]
    assert item["image"].shape == (1, 16, 16) and item["label"].shape == (32, 32)
    assert (item["case"], item["index"]) == ("case0004", 1)
    assert test.spacing("case0004") == tuple(json.loads((root / "spacing.json").read_text())["case0004"])
    assert test.units == "mm" and test.volumetric


def test_augmentation_is_reproducible_per_draw(root):
    ds = SynapseDataset(root, "train", img_size=32, seed=5)
    a, b = ds[len(ds) + 2], ds[len(ds) + 2]
    assert (a["label"] == b["label"]).all() and (a["image"] == b["image"]).all()
    draws = [ds[2 + k * len(ds)]["image"] for k in range(6)]  # the same slice drawn in 6 epochs
    assert any(not (d == draws[0]).all() for d in draws[1:])


def test_missing_root_names_the_prepare_script(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"prepare_synapse\.py"):
        datasets.create_dataset("synapse", root=tmp_path / "nope", split="train")


def test_bad_label_values_name_the_file(tmp_path):
    root = write_synthetic_synapse(tmp_path / "bad", **GEN)
    f = root / "train_npz" / "case0001_slice000.npz"
    with np.load(f) as npz:
        img = npz["image"]
    np.savez(f, image=img, label=np.full((32, 32), 12, np.uint8))
    ds = SynapseDataset(root, "train", img_size=32, augment=False)
    with pytest.raises(ValueError, match=r"case0001_slice000\.npz: label values \[12\]"):
        ds[0]


def test_missing_slice_files_are_named(tmp_path):
    root = write_synthetic_synapse(tmp_path / "miss", **GEN)
    (root / "train_npz" / "case0002_slice001.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"case0002_slice001\.npz"):
        SynapseDataset(root, "train")


def test_label_noise_is_applied_to_training_draws_reproducibly(root):
    noise = {"type": "pixel", "rate": 0.3}
    clean = SynapseDataset(root, "train", img_size=32, seed=5)
    noisy = SynapseDataset(root, "train", img_size=32, seed=5, label_noise=noise)
    a, b = noisy[len(noisy) + 3], noisy[len(noisy) + 3]
    assert (a["label"] == b["label"]).all()
    changed = (a["label"] != clean[len(clean) + 3]["label"]).float().mean()
    assert 0.1 < changed < 0.5
    test = SynapseDataset(root, "test", img_size=32, label_noise=noise)  # evaluation is never noised
    np.testing.assert_array_equal(
        test[2]["label"].numpy(), SynapseDataset(root, "test", img_size=32)[2]["label"].numpy()
    )


def test_iterating_a_dataset_stops_after_its_length(root):
    ds = SynapseDataset(root, "test", img_size=32)
    assert sum(1 for _ in ds) == len(ds) == 12


def test_ignore_background_maps_label_0_to_ignore_in_every_split(root):
    train = SynapseDataset(root, "train", img_size=32, augment=False, ignore_background=True)
    test = SynapseDataset(root, "test", img_size=32, ignore_background=True)
    with np.load(root / "train_npz" / "case0001_slice003.npz") as npz:
        expected = np.where(npz["label"] == 0, 255, npz["label"])
    np.testing.assert_array_equal(train[3]["label"].numpy(), expected)
    assert 0 not in test[2]["label"].unique() and 255 in test[2]["label"].unique()
    augmented = SynapseDataset(root, "train", img_size=32, seed=1, ignore_background=True)
    assert all(
        0 not in augmented[len(augmented) + k]["label"].unique() for k in range(12)
    )  # rotations fill 255
