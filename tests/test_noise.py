"""Label noise: pixel and region flips, boundary shifts, config validation, dataset wiring."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_formats import blocks, write_cityscapes
from scipy import ndimage

import datasets
from datasets.noise import apply_label_noise, check_label_noise

C = 19


def street(seed: int = 0) -> np.ndarray:
    """Blocky labels with an ignored band, as uint8 like the street-scene crops."""
    label = blocks(np.random.default_rng(seed), (96, 128), range(C), cell=12).astype(np.uint8)
    label[:, :9] = 255
    return label


CONFIGS = [
    {"type": "pixel", "rate": 0.3},
    {"type": "component", "rate": 0.5},
    {"type": "boundary", "rate": 1.0, "radius": 3},
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["type"])
def test_noise_keeps_ignored_pixels_dtype_and_is_reproducible_from_the_rng(cfg):
    label = street()
    out = apply_label_noise(label, np.random.default_rng(7), num_classes=C, **cfg)
    again = apply_label_noise(label, np.random.default_rng(7), num_classes=C, **cfg)
    other = apply_label_noise(label, np.random.default_rng(8), num_classes=C, **cfg)
    assert out.dtype == label.dtype and out.shape == label.shape
    np.testing.assert_array_equal(out == 255, label == 255)
    np.testing.assert_array_equal(out, again)
    assert (out != label).any() and (out != other).any()
    assert out[out != 255].max() < C


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c["type"])
def test_zero_rate_is_the_identity(cfg):
    label = street()
    out = apply_label_noise(label, np.random.default_rng(0), num_classes=C, **{**cfg, "rate": 0.0})
    np.testing.assert_array_equal(out, label)


def test_pixel_flips_hit_the_rate_and_always_change_the_class():
    label = street(1)
    out = apply_label_noise(label, np.random.default_rng(2), num_classes=C, type="pixel", rate=0.2)
    annotated = label != 255
    assert abs((out != label)[annotated].mean() - 0.2) < 0.01
    assert ((out != label) <= annotated).all()


def test_component_flips_move_whole_regions_to_another_class():
    label = street(3)
    out = apply_label_noise(label, np.random.default_rng(4), num_classes=C, type="component", rate=0.5)
    flipped = total = 0
    for c in range(C):
        regions, n = ndimage.label(label == c, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            values = np.unique(out[regions == k])
            assert len(values) == 1  # a region moves as a whole
            flipped += values[0] != c
            total += 1
    assert total > 50 and 0.35 < flipped / total < 0.65


@pytest.mark.parametrize("radius", [1, 4])
def test_boundary_noise_shifts_a_straight_edge_by_whole_radii(radius):
    label = np.zeros((40, 60), np.uint8)
    label[:, 30:] = 1
    shifts = set()
    for seed in range(12):
        out = apply_label_noise(
            label, np.random.default_rng(seed), num_classes=C, type="boundary", rate=1, radius=radius
        )
        edge = (out == 0).sum(1)  # the column where class 1 starts, per row
        assert (edge == edge[0]).all() and set(np.unique(out)) <= {0, 1}
        shifts.add(int(edge[0]) - 30)
    # each side dilates (+r into the other) or erodes (-r); two regions compose to 0 or ±2r
    assert shifts <= {-2 * radius, 0, 2 * radius} and len(shifts) > 1


def test_boundary_noise_composes_euclidean_dilations_and_erosions_of_a_disk():
    yy, xx = np.mgrid[0:61, 0:61]
    label = np.full((61, 61), 255, np.uint8)
    label[np.hypot(yy - 30, xx - 30) <= 25] = 0
    label[np.hypot(yy - 30, xx - 30) <= 12] = 1  # a disk of class 1 inside a ring of 0 inside ignore
    annotated = label != 255

    def grow(disk):  # the disk dilates, or the ring erodes towards it
        return annotated & (ndimage.distance_transform_edt(~disk) <= 3)

    def shrink(disk):  # the disk erodes, or the ring dilates into it
        return disk & (ndimage.distance_transform_edt(~(annotated & ~disk)) > 3)

    disk = label == 1
    expected = {tuple(np.flatnonzero(f(g(disk)))) for f in (grow, shrink) for g in (grow, shrink)}
    seen = set()
    for seed in range(12):
        out = apply_label_noise(
            label, np.random.default_rng(seed), num_classes=C, type="boundary", rate=1, radius=3
        )
        seen.add(tuple(np.flatnonzero(out == 1)))
    assert seen <= expected and len(seen) > 1


def test_regions_without_annotated_neighbours_are_left_alone():
    label = np.full((20, 20), 255, np.uint8)
    label[5:15, 5:15] = 4
    out = apply_label_noise(label, np.random.default_rng(0), num_classes=C, type="boundary", rate=1, radius=2)
    np.testing.assert_array_equal(out, label)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"type": "salt", "rate": 0.1}, "type must be one of pixel, component, boundary"),
        ({"type": "pixel", "rate": 1.5}, r"rate must be a number in \[0, 1\]"),
        ({"type": "pixel"}, "rate"),
        ({"type": "pixel", "rate": 0.1, "radius": 2}, "radius applies to type 'boundary' only"),
        ({"type": "boundary", "rate": 0.1}, "radius must be an integer >= 1"),
        ({"type": "boundary", "rate": 0.1, "radius": 0}, "radius must be an integer >= 1"),
        ({"type": "pixel", "rate": 0.1, "sigma": 1}, r"unknown key\(s\) \['sigma'\]"),
    ],
)
def test_bad_configs_are_rejected_with_the_offending_key(cfg, match):
    with pytest.raises(ValueError, match=match):
        check_label_noise(cfg)


def test_empty_config_means_no_noise():
    assert check_label_noise(None) is None and check_label_noise({}) is None


def test_dataset_option_noises_training_labels_after_the_same_augmentation(tmp_path):
    write_cityscapes(tmp_path, "train", ["aachen_000000_000019"], seed=6)
    options = {"root": tmp_path, "split": "train", "crop_size": [32, 64], "seed": 1}
    clean = datasets.create_dataset("cityscapes", **options)
    noisy = datasets.create_dataset("cityscapes", **options, label_noise={"type": "pixel", "rate": 1.0})
    a, b = clean[5], noisy[5]
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    annotated = a["label"] != 255
    assert (a["label"][annotated] != b["label"][annotated]).all()
    assert (b["label"][~annotated] == 255).all()
