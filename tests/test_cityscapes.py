"""Cityscapes: official layout, label table, pipeline, export to the official evaluator, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, trainId2label
from fixtures_formats import load_script, write_cityscapes, write_png
from PIL import Image

import datasets
from datasets import transforms as T
from datasets.cityscapes import CLASS_NAMES, train_ids_to_label_ids

VAL = ["frankfurt_000000_000294", "frankfurt_000001_000538", "lindau_000012_000019"]
MEAN, STD = np.array(T.IMAGENET_MEAN), np.array(T.IMAGENET_STD)


@pytest.fixture
def root(tmp_path):
    write_cityscapes(tmp_path, "train", ["aachen_000000_000019", "aachen_000001_000019"], seed=1)
    write_cityscapes(tmp_path, "val", VAL, seed=2)
    return tmp_path


def official_train_ids(ids: np.ndarray) -> np.ndarray:
    """Per-pixel lookup in cityscapesscripts' table (the oracle)."""
    out = np.vectorize(lambda i: id2label[int(i)].trainId)(ids)
    return np.where((out < 0) | (out >= 19), 255, out)


def test_label_ids_become_the_official_train_ids_and_class_names(root):
    ds = datasets.create_dataset("cityscapes", root=root, split="val")
    assert ds.class_names == tuple(trainId2label[t].name for t in range(19)) == CLASS_NAMES
    assert ds.units == "px" and len(ds) == 3
    for i, case in enumerate(VAL):
        ids = np.array(Image.open(root / f"gtFine/val/{case.split('_')[0]}/{case}_gtFine_labelIds.png"))
        item = ds[i]
        assert item["case"] == case and item["index"] == 0
        np.testing.assert_array_equal(item["label"].numpy(), official_train_ids(ids))


def test_evaluation_item_is_the_whole_imagenet_normalised_rgb_image(root):
    item = datasets.create_dataset("cityscapes", root=root, split="val")[0]
    rgb = np.array(Image.open(root / f"leftImg8bit/val/frankfurt/{VAL[0]}_leftImg8bit.png").convert("RGB"))
    expected = ((rgb / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    assert item["image"].shape == (3, 64, 128) and item["label"].shape == (64, 128)
    np.testing.assert_allclose(item["image"].numpy(), expected, atol=1e-5)


def test_training_items_are_random_crops_reproducible_per_draw(root):
    ds = datasets.create_dataset("cityscapes", root=root, split="train", crop_size=[32, 64], seed=3)
    a, b, again = ds[0], ds[len(ds)], ds[0]  # same image, different draws; the same draw twice
    assert a["image"].shape == (3, 32, 64) and a["label"].shape == (32, 64)
    assert a["case"] == b["case"]
    assert not np.array_equal(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(a["image"].numpy(), again["image"].numpy())
    np.testing.assert_array_equal(a["label"].numpy(), again["label"].numpy())
    assert set(np.unique(a["label"].numpy())) <= {*range(19), 255}


@pytest.mark.parametrize("scale", [0.5, 0.73, 1.0, 1.61, 2.0])
def test_scale_crop_equals_resize_then_pad_then_crop(scale):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:90]
    image = np.stack([np.sin(yy / 7 + c) + np.cos(xx / 5) for c in range(3)]).astype(np.float32)
    label = rng.integers(0, 19, (60, 90))
    h, w = int(60 * scale + 0.5), int(90 * scale + 0.5)
    for offset in [(0, 0), (7, 11), (h - 20, w - 40), (h - 5, w - 9)]:
        got_image, got_label = T.scale_crop(image, label, scale, offset, (32, 64), fill_image=-9)
        resized = np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in image])
        # label oracle: nearest source pixel centre, exact arithmetic
        src_y = np.minimum(((np.arange(h) + 0.5) * 60 / h).astype(int), 59)
        src_x = np.minimum(((np.arange(w) + 0.5) * 90 / w).astype(int), 89)
        padded_image, padded_label = T.pad_to(resized, label[np.ix_(src_y, src_x)], (h + 64, w + 64), -9)
        window = np.s_[offset[0] : offset[0] + 32, offset[1] : offset[1] + 64]
        np.testing.assert_allclose(got_image, padded_image[(slice(None), *window)], atol=1e-4)
        assert (got_label != padded_label[window]).mean() < 0.002  # cv2 maps coordinates in 1/1024 px


def test_export_gives_the_official_evaluator_our_confusion_matrix_miou(root, tmp_path):
    export = load_script("export_cityscapes")
    ds = datasets.create_dataset("cityscapes", root=root, split="val")
    rng = np.random.default_rng(4)
    confusion = np.zeros((19, 19), np.int64)
    results = tmp_path / "results"
    for i in range(len(ds)):  # (iterating ``ds`` itself never ends: indices wrap around)
        item = ds[i]
        gt = item["label"].numpy()
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 19, gt.shape), np.minimum(gt, 18))
        export.export_prediction(pred, item["case"], results)
        valid = gt != 255
        confusion += np.bincount(19 * gt[valid] + pred[valid], minlength=19 * 19).reshape(19, 19)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    ours = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    official = export.evaluate_official(root, results, quiet=True)
    theirs = np.array([official["classScores"][name] for name in CLASS_NAMES])
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert official["averageScoreClasses"] == pytest.approx(np.nanmean(ours), rel=1e-12)
    assert 0.5 < np.nanmean(ours) < 0.95  # a non-trivial score, far from the ~0 of unmapped train ids
    assert sorted(p.name for p in results.iterdir()) == [f"{c}_pred.png" for c in VAL]


def test_export_cli_converts_a_folder_of_train_id_maps(root, tmp_path):
    export = load_script("export_cityscapes")
    preds = tmp_path / "preds"
    write_png(preds / f"{VAL[0]}.png", np.full((64, 128), 13, np.uint8))
    preds.joinpath(f"{VAL[1]}.npy").parent.mkdir(exist_ok=True)
    np.save(preds / f"{VAL[1]}.npy", np.full((64, 128), 255, np.int64))
    export.main([str(preds), str(tmp_path / "out")])
    car = np.array(Image.open(tmp_path / "out" / f"{VAL[0]}_pred.png"))
    none = np.array(Image.open(tmp_path / "out" / f"{VAL[1]}_pred.png"))
    assert car.dtype == np.uint8 and (car == 26).all() and (none == 0).all()


def test_train_ids_to_label_ids_rejects_values_that_are_not_train_ids():
    assert train_ids_to_label_ids(np.array([[0, 18, 255]])).tolist() == [[7, 33, 0]]
    with pytest.raises(ValueError, match=r"\[19, 200\]"):
        train_ids_to_label_ids(np.array([[0, 19, 200]]))


def test_missing_root_says_how_to_get_the_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gtFine_trainvaltest\.zip"):
        datasets.create_dataset("cityscapes", root=tmp_path / "nope", split="val")


def test_wrong_layout_names_the_expected_folder(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/val .*layout"):
        datasets.create_dataset("cityscapes", root=tmp_path, split="val")


def test_images_without_labels_and_labels_without_images_are_named(root):
    (root / f"gtFine/val/frankfurt/{VAL[0]}_gtFine_labelIds.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=f"1 image.* without a label file: .*{VAL[0]}_leftImg8bit.png"
    ):
        datasets.create_dataset("cityscapes", root=root, split="val")
    (root / f"leftImg8bit/val/frankfurt/{VAL[0]}_leftImg8bit.png").unlink()
    (root / f"leftImg8bit/val/lindau/{VAL[2]}_leftImg8bit.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"label file.* without an image: .*{VAL[2]}_gtFine_labelIds"):
        datasets.create_dataset("cityscapes", root=root, split="val")


def test_empty_split_is_reported(tmp_path):
    (tmp_path / "leftImg8bit/test/berlin").mkdir(parents=True)
    (tmp_path / "gtFine/test/berlin").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="'test' split is empty"):
        datasets.create_dataset("cityscapes", root=tmp_path, split="test")


def test_unknown_label_ids_are_named_with_their_file_on_load(root):
    path = root / f"gtFine/val/lindau/{VAL[2]}_gtFine_labelIds.png"
    ids = np.array(Image.open(path))
    ids[0, :3] = [40, 200, 40]
    write_png(path, ids)
    ds = datasets.create_dataset("cityscapes", root=root, split="val")
    with pytest.raises(ValueError, match=rf"{VAL[2]}_gtFine_labelIds.png: label values \[40, 200\]"):
        ds[2]


def test_colour_label_image_is_rejected(root):
    path = root / f"gtFine/val/frankfurt/{VAL[0]}_gtFine_labelIds.png"
    write_png(path, np.zeros((64, 128, 3), np.uint8))
    with pytest.raises(ValueError, match="single-channel"):
        datasets.create_dataset("cityscapes", root=root, split="val")[0]


def test_corrupt_and_mismatched_files_are_named(root):
    image = root / f"leftImg8bit/val/frankfurt/{VAL[1]}_leftImg8bit.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    label = root / f"gtFine/val/lindau/{VAL[2]}_gtFine_labelIds.png"
    write_png(label, np.zeros((32, 128), np.uint8))
    ds = datasets.create_dataset("cityscapes", root=root, split="val")
    with pytest.raises(OSError, match=f"cannot read image .*{VAL[1]}_leftImg8bit.png"):
        ds[1]
    with pytest.raises(ValueError, match=f"{VAL[2]}_gtFine_labelIds.png is \\(128, 32\\)"):
        ds[2]


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"crop_size": [500, 1000]}, "multiples of 32"),
        ({"crop_size": 512}, "crop_size"),
        ({"scale": [2.0, 0.5]}, "scale"),
        ({"label_noise": {"type": "salt"}}, "label_noise.type"),
        ({"crop": [512, 512]}, "unknown option"),
    ],
)
def test_bad_options_are_rejected_before_training(root, option, match):
    with pytest.raises((ValueError, TypeError), match=match):
        datasets.create_dataset("cityscapes", root=root, split="train", **option)
