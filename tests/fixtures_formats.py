"""Writers of small data trees in the official on-disk formats, for tests and the loader benchmark.

- Cityscapes: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` (8-bit RGB) and
  ``gtFine/{split}/{city}/*_gtFine_{labelIds,instanceIds}.png`` (8-bit ids; 16-bit ``id·1000+k``).
- SYNTHIA-RAND-CITYSCAPES: ``RGB/*.png`` and ``GT/LABELS/*.png`` (16-bit, 3 channels, class id in R,
  instance id in G).
- BTCV: ``img/img00XX.nii.gz`` (int16 HU) and ``label/label00XX.nii.gz`` (uint8 ids 0–13).

Images are smooth colour fields with mild noise (their PNGs are about as large as real photos) and labels
are random blocks of about ``cell`` pixels; everything is deterministic in ``seed``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import cv2
import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def blocks(
    rng: np.random.Generator, size: tuple[int, int], values: Sequence[int], cell: int = 8
) -> np.ndarray:
    """A ``size`` map of random ``values`` in square-ish blocks of about ``cell`` pixels."""
    h, w = size
    grid = rng.choice(np.asarray(values), size=(-(-h // cell), -(-w // cell)))
    return np.repeat(np.repeat(grid, cell, 0), cell, 1)[:h, :w]


def photo(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A ``uint8 [H,W,3]`` smooth random colour field with mild pixel noise.

    As a PNG, a 2048×1024 one takes about 2.2 MB, like the photos of Cityscapes.
    """
    h, w = size
    coarse = rng.uniform(0, 255, (max(h // 128, 2), max(w // 128, 2), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 1, smooth.shape), 0, 255).astype(np.uint8)


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def write_cityscapes(
    root: Path,
    split: str,
    cases: Sequence[str],
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
    cell: int = 8,
) -> dict[str, np.ndarray]:
    """Write ``cases`` (``{city}_{seq}_{frame}``) of ``split``; return each case's label ids."""
    rng = np.random.default_rng(seed)
    ids = {}
    for case in cases:
        city = case.split("_")[0]
        ids[case] = blocks(rng, size, range(34), cell).astype(np.uint8)
        instances = ids[case].astype(np.uint16) * 1000 + blocks(rng, size, range(3), cell).astype(np.uint16)
        instances[ids[case] < 24] = ids[case][ids[case] < 24]  # only classes with instances get id·1000+k
        write_png(
            root / "leftImg8bit" / split / city / f"{case}_leftImg8bit.png", photo(rng, size)[:, :, ::-1]
        )
        write_png(root / "gtFine" / split / city / f"{case}_gtFine_labelIds.png", ids[case])
        write_png(root / "gtFine" / split / city / f"{case}_gtFine_instanceIds.png", instances)
    return ids


def write_synthia(
    root: Path, stems: Sequence[str], size: tuple[int, int] = (40, 72), seed: int = 0, cell: int = 8
) -> dict[str, np.ndarray]:
    """Write SYNTHIA-RAND-CITYSCAPES images ``stems``; return each one's class ids."""
    rng = np.random.default_rng(seed)
    ids = {}
    for stem in stems:
        ids[stem] = blocks(rng, size, range(23), cell).astype(np.uint16)
        instance = blocks(rng, size, range(500), cell).astype(np.uint16)
        bgr = np.stack([np.zeros_like(instance), instance, ids[stem]], axis=-1)  # cv2 order: B, G, R
        write_png(root / "RGB" / f"{stem}.png", photo(rng, size)[:, :, ::-1])
        write_png(root / "GT" / "LABELS" / f"{stem}.png", bgr)
    return ids


def write_btcv(
    root: Path,
    cases: Sequence[int],
    shape: tuple[int, int, int] = (12, 10, 4),
    affine: np.ndarray | None = None,
    seed: int = 0,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Write BTCV ``img``/``label`` NIfTI volumes of ``shape`` (x, y, z); return (HU, ids) per case.

    ``affine`` defaults to LPS storage with 0.8 × 0.7 mm pixels and 2.5 mm slices, as in DICOM-derived
    NIfTI files (``diag(-0.8, -0.7, 2.5)`` in nibabel's RAS world).
    """
    affine = np.diag([-0.8, -0.7, 2.5, 1.0]) if affine is None else affine
    rng = np.random.default_rng(seed)
    volumes = {}
    for case in cases:
        hu = rng.integers(-1000, 1000, shape).astype(np.int16)
        ids = rng.integers(0, 14, shape).astype(np.uint8)
        for folder, name, data in (("img", "img", hu), ("label", "label", ids)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, affine), root / folder / f"{name}{case:04d}.nii.gz")
        volumes[case] = hu, ids
    return volumes
