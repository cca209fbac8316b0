"""prepare_synapse.py: raw BTCV NIfTI → TransUNet layout, read back by the Synapse loader."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pytest
from fixtures_formats import load_script, write_btcv

import datasets

prep = load_script("prepare_synapse")
#: BTCV id → TransUNet id, from the BTCV organ list and TransUNet's 8 organs, written out independently
BTCV = {0: 0, 1: 7, 2: 4, 3: 3, 4: 2, 5: 0, 6: 5, 7: 8, 8: 1, 9: 0, 10: 0, 11: 6, 12: 0, 13: 0}
SHAPE = (12, 10, 4)  # (x, y, z) as stored in NIfTI


@pytest.fixture
def raw(tmp_path):
    volumes = write_btcv(tmp_path / "RawData" / "Training", [5, 6, 8], shape=SHAPE, seed=1)
    return tmp_path, volumes


def expected_image(hu: np.ndarray) -> np.ndarray:
    """TransUNet windowing of an LPS-stored (x, y, z) volume, as [z, y, x]."""
    return np.clip((hu.astype(np.float64) + 125) / 400, 0, 1).transpose(2, 1, 0)


def test_default_split_is_transunets_18_train_and_12_test_cases():
    assert prep.TRAIN_CASES == [5, 6, 7, 9, 10, 21, 23, 24, 26, 27, 28, 30, 31, 33, 34, 37, 39, 40]
    assert sorted(prep.TEST_CASES) == [1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38]


def test_writes_the_transunet_layout_with_windowed_images_and_remapped_labels(raw):
    tmp, volumes = raw
    out = prep.prepare_synapse(tmp, tmp / "Synapse", train_cases=[5, 6], test_cases=[8])
    names = [f"case{c:04d}_slice{z:03d}" for c in (5, 6) for z in range(4)]
    assert (out / "lists/train.txt").read_text().split() == names
    assert (out / "lists/test_vol.txt").read_text() == "case0008\n"
    assert sorted(p.stem for p in (out / "train_npz").iterdir()) == names
    table = np.vectorize(BTCV.get)
    with np.load(out / "train_npz/case0006_slice002.npz") as npz:
        assert npz["image"].dtype == np.float32 and npz["label"].dtype == np.uint8
        hu, ids = volumes[6]
        np.testing.assert_allclose(npz["image"], expected_image(hu)[2], atol=1e-6)
        np.testing.assert_array_equal(npz["label"], table(ids).transpose(2, 1, 0)[2])
    with h5py.File(out / "test_vol_h5/case0008.npy.h5") as h5:
        hu, ids = volumes[8]
        assert h5["image"].shape == (4, 10, 12) and h5["label"].dtype == np.uint8
        np.testing.assert_allclose(h5["image"][:], expected_image(hu), atol=1e-6)
        np.testing.assert_array_equal(h5["label"][:], table(ids).transpose(2, 1, 0))
    spacing = json.loads((out / "spacing.json").read_text())
    assert spacing == {f"case{c:04d}": pytest.approx([2.5, 0.7, 0.8]) for c in (5, 6, 8)}


def test_volumes_stored_in_another_orientation_give_the_same_arrays(raw, tmp_path_factory):
    tmp, volumes = raw
    ras = tmp_path_factory.mktemp("ras")
    for case, (hu, ids) in volumes.items():  # the same anatomy stored RAS: x and y reversed
        for folder, name, data in (("img", "img", hu), ("label", "label", ids)):
            (ras / folder).mkdir(exist_ok=True)
            affine = np.diag([0.8, 0.7, 2.5, 1.0])
            affine[:2, 3] = [-0.8 * (SHAPE[0] - 1), -0.7 * (SHAPE[1] - 1)]
            nib.save(
                nib.Nifti1Image(data[::-1, ::-1].copy(), affine), ras / folder / f"{name}{case:04d}.nii.gz"
            )
    a = prep.prepare_synapse(tmp, tmp / "lps_out", train_cases=[5], test_cases=[8])
    b = prep.prepare_synapse(ras, ras / "out", train_cases=[5], test_cases=[8])
    with (
        h5py.File(a / "test_vol_h5/case0008.npy.h5") as ha,
        h5py.File(b / "test_vol_h5/case0008.npy.h5") as hb,
    ):
        np.testing.assert_array_equal(ha["image"][:], hb["image"][:])
        np.testing.assert_array_equal(ha["label"][:], hb["label"][:])
    assert json.loads((a / "spacing.json").read_text()) == json.loads((b / "spacing.json").read_text())


def test_the_synapse_loader_reads_the_prepared_data(raw):
    tmp, _ = raw
    out = prep.prepare_synapse(tmp, tmp / "Synapse", train_cases=[5, 6], test_cases=[8])
    train = datasets.create_dataset("synapse", root=out, split="train", img_size=32)
    test = datasets.create_dataset("synapse", root=out, split="test", img_size=32)
    assert len(train) == 8 and len(test) == 4
    assert train[0]["image"].shape == (1, 32, 32) and test[3]["label"].shape == (10, 12)
    assert test[3]["case"] == "case0008" and test.spacing("case0008") == pytest.approx((2.5, 0.7, 0.8))


def test_cli_finds_the_raw_folders_and_the_default_split_needs_all_30_cases(raw):
    tmp, _ = raw
    with pytest.raises(FileNotFoundError, match=r"img0001\.nii\.gz"):  # the default split needs all 30 cases
        prep.main([str(tmp), str(tmp / "out")])
    assert not (tmp / "out").exists()


def test_existing_output_is_kept_unless_overwrite(raw):
    tmp, _ = raw
    out = prep.prepare_synapse(tmp, tmp / "Synapse", train_cases=[5], test_cases=[8])
    with pytest.raises(FileExistsError, match="--overwrite"):
        prep.prepare_synapse(tmp, out, train_cases=[6], test_cases=[8])
    prep.prepare_synapse(tmp, out, train_cases=[6], test_cases=[8], overwrite=True)
    assert (out / "lists/train.txt").read_text().split()[0] == "case0006_slice000"
    assert sorted(p.name for p in tmp.iterdir()) == ["RawData", "Synapse"]  # no temporary folders left


def test_a_failure_midway_leaves_no_partial_output(raw):
    tmp, _ = raw
    (tmp / "RawData/Training/label/label0008.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(OSError, match=r"cannot read NIfTI volume .*label0008\.nii\.gz"):
        prep.prepare_synapse(tmp, tmp / "Synapse", train_cases=[5, 6], test_cases=[8])
    assert sorted(p.name for p in tmp.iterdir()) == ["RawData"]


def test_input_errors_name_the_file_and_values(raw, tmp_path_factory):
    tmp, volumes = raw
    with pytest.raises(FileNotFoundError, match="expected folders img/"):
        prep.prepare_synapse(tmp_path_factory.mktemp("empty"), tmp / "x")
    with pytest.raises(FileNotFoundError, match=r"missing BTCV volumes: .*img0007\.nii\.gz"):
        prep.prepare_synapse(tmp, tmp / "x", train_cases=[5, 7], test_cases=[8])
    ids = volumes[6][1]
    bad = ids.copy()
    bad[0, 0, 0] = 20
    affine = np.diag([-0.8, -0.7, 2.5, 1.0])
    nib.save(nib.Nifti1Image(bad, affine), tmp / "RawData/Training/label/label0006.nii.gz")
    with pytest.raises(ValueError, match=r"label0006\.nii\.gz: values \[20\.0\] are not BTCV organ ids"):
        prep.prepare_synapse(tmp, tmp / "x", train_cases=[6], test_cases=[8])
    nib.save(nib.Nifti1Image(ids[:, :, :3].copy(), affine), tmp / "RawData/Training/label/label0006.nii.gz")
    with pytest.raises(ValueError, match=r"label0006\.nii\.gz has shape \(3, 10, 12\)"):
        prep.prepare_synapse(tmp, tmp / "x", train_cases=[6], test_cases=[8])
    assert not (tmp / "x").exists()
