"""Embedded synthetic multi-organ CT, written in the exact Synapse/TransUNet layout.

Each case is a grey ``[D,S,S]`` volume: a body ellipse with soft tissue texture and 8 "organs" with
TransUNet's label ids, chosen so losses behave differently — large (liver, stomach), medium (spleen,
kidneys), thin (aorta: a tube through every slice; pancreas: a flat, low-contrast band) and small
(gallbladder: a few slices, absent from most). Positions, sizes, intensities and voxel spacing vary
per case; everything is deterministic in ``seed``. The data are written once to ``root`` (atomically:
temp dir + rename) and read back by :class:`SyntheticDataset`, a
:class:`datasets.synapse.SynapseDataset` (the loader of the real data).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from scipy import ndimage

from .registry import register_dataset
from .synapse import SynapseDataset

VERSION = 1
# label: (mean intensity, radii (z, y, x) as fractions of (D, S, S), centre (z, y, x) fractions)
ORGANS = {
    5: (0.62, (0.45, 0.22, 0.20), (0.50, 0.45, 0.30)),  # liver
    8: (0.52, (0.30, 0.14, 0.13), (0.45, 0.40, 0.68)),  # stomach
    7: (0.58, (0.22, 0.08, 0.08), (0.55, 0.62, 0.78)),  # spleen
    3: (0.70, (0.22, 0.07, 0.05), (0.60, 0.66, 0.66)),  # left kidney
    4: (0.70, (0.22, 0.07, 0.05), (0.60, 0.66, 0.34)),  # right kidney
    6: (0.50, (0.12, 0.03, 0.16), (0.50, 0.56, 0.52)),  # pancreas (flat, low contrast)
    2: (0.36, (0.14, 0.06, 0.06), (0.30, 0.52, 0.36)),  # gallbladder (small, few slices)
}
AORTA = 1


def _case(rng: np.random.Generator, depth: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.meshgrid(
        np.linspace(0, 1, depth), np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij"
    )
    label = np.zeros((depth, size, size), np.uint8)
    image = np.full(label.shape, 0.05, np.float32)
    body = ((y - 0.5) / 0.42) ** 2 + ((x - 0.5) / 0.47) ** 2 <= 1
    image[body] = 0.30
    for lab, (mean, radii, centre) in ORGANS.items():
        c = np.asarray(centre) + rng.normal(0, 0.03, 3)
        r = np.asarray(radii) * rng.uniform(0.8, 1.25, 3)
        wobble = 1 + 0.15 * np.sin(2 * np.pi * (z * rng.uniform(1, 3) + rng.random()))
        inside = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / (r[1] * wobble)) ** 2 + ((x - c[2]) / r[2]) ** 2
        mask = (inside <= 1) & body & (label == 0)
        label[mask] = lab
        image[mask] = mean + rng.normal(0, 0.02)
    # aorta: a thin tube through every slice, drifting slightly
    ay = 0.62 + 0.02 * np.sin(2 * np.pi * z * rng.uniform(0.5, 1.5))
    ax = 0.50 + rng.normal(0, 0.01)
    tube = ((y - ay) ** 2 + (x - ax) ** 2) <= (0.035 * rng.uniform(0.85, 1.15)) ** 2
    label[tube] = AORTA
    image[tube] = 0.80
    texture = ndimage.gaussian_filter(rng.normal(0, 1, label.shape), sigma=(0.5, 1.5, 1.5))
    image = ndimage.gaussian_filter(image, sigma=(0, 0.7, 0.7)) + 0.04 * texture.astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), label


def write_synthetic_synapse(
    root: str | Path,
    *,
    train_cases: int = 8,
    test_cases: int = 4,
    depth: int = 24,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Generate the synthetic set into ``root`` in the Synapse layout; return ``root``.

    A ``meta.json`` records the parameters; an existing ``root`` with the same parameters is reused,
    one with other parameters raises (delete it or choose another root). Concurrent writers (sweep
    jobs) are safe: each writes a private temp dir and the first rename wins.
    """
    root = Path(root)
    minimum = {
        "train_cases": (train_cases, 1),
        "test_cases": (test_cases, 1),
        "depth": (depth, 1),
        "size": (size, 16),
    }
    for key, (value, least) in minimum.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"data.generator.{key}={value!r}: expected an integer >= {least}")
    meta = {
        "generator": "segloss-bench synthetic",
        "version": VERSION,
        "train_cases": train_cases,
        "test_cases": test_cases,
        "depth": depth,
        "size": size,
        "seed": seed,
    }
    if root.exists():
        found = json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else None
        if found != meta:
            raise FileExistsError(
                f"{root} exists but does not hold synthetic data generated with {meta} (found {found}); "
                "delete it or point data.root elsewhere"
            )
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        for sub in ("train_npz", "test_vol_h5", "lists"):
            (tmp / sub).mkdir()
        train_list, test_list, spacing = [], [], {}
        for k in range(train_cases + test_cases):
            case = f"case{k + 1:04d}"
            rng = np.random.default_rng([seed, k])
            image, label = _case(rng, depth, size)
            spacing[case] = [
                round(float(rng.uniform(2.5, 3.5)), 3),
                *[round(float(rng.uniform(0.7, 0.9)), 3)] * 2,
            ]
            if k < train_cases:
                for zi in range(depth):
                    name = f"{case}_slice{zi:03d}"
                    np.savez_compressed(tmp / "train_npz" / f"{name}.npz", image=image[zi], label=label[zi])
                    train_list.append(name)
            else:
                with h5py.File(tmp / "test_vol_h5" / f"{case}.npy.h5", "w") as h5:
                    h5.create_dataset("image", data=image)
                    h5.create_dataset("label", data=label)
                test_list.append(case)
        (tmp / "lists" / "train.txt").write_text("\n".join(train_list) + "\n")
        (tmp / "lists" / "test_vol.txt").write_text("\n".join(test_list) + "\n")
        (tmp / "spacing.json").write_text(json.dumps(spacing, indent=1))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, root)
        except OSError:  # another job finished first: use its copy
            if not (root / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


@register_dataset(
    "synthetic",
    reference="segloss-bench embedded synthetic multi-organ CT (Synapse layout)",
    splits=("train", "test"),
    generated=True,
)
class SyntheticDataset(SynapseDataset):
    """Synthetic CT-like volumes with 8 organs of very different sizes, generated on first use.

    ``generator`` holds the keyword arguments of :func:`write_synthetic_synapse` (cases, depth,
    size, seed); pass the same for every split of one ``root``. The other options are those of
    :class:`datasets.synapse.SynapseDataset` (``label_noise``, ``ignore_background``, ...).
    """

    def __init__(
        self,
        root: Path,
        split: str,
        *,
        img_size: int = 64,
        generator: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        write_synthetic_synapse(root, **(generator or {}))
        super().__init__(root, split, img_size=img_size, **options)

    @property
    def remedy(self) -> str:
        return f"delete {self.root} to have it generated again"
