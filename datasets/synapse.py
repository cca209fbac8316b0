"""Synapse multi-organ CT in the TransUNet preprocessed layout.

Layout under ``root`` (TransUNet's, plus our spacing sidecar)::

    train_npz/caseXXXX_sliceYYY.npz    keys image float [H,W] in [0,1], label int [H,W]
    test_vol_h5/caseXXXX.npy.h5        datasets image float [D,H,W], label int [D,H,W]
    lists/train.txt, lists/test_vol.txt  one slice name / case name per line (TransUNet's lists)
    spacing.json (optional)            {"case0001": [z, y, x]} in mm (written by prepare_synapse.py)

Bad data fail before training, naming the file and what to do: building a split checks the layout,
the listed files, the test volumes' keys and shapes and the spacing sidecar (it must parse and
hold three positive sizes for every test case); :meth:`SynapseDataset.preflight` opens every
training slice (truncated file, missing key, image/label shapes — never a silent resize) and reads
every test label volume (values in range); a training slice's label values are checked when read.

When ``lists/`` is missing, the standard TransUNet split shipped with this package is used: the 12
test cases of ``test_vol.txt`` and every ``train_npz`` slice of the 18 training cases. Training
slices get TransUNet's augmentation (random rot90+flip, else random rotation ±20°, each with
probability ½) and are resized to ``img_size``; test items hold the resized slice as ``image`` and
the slice at its native resolution as ``label``, so metrics are computed on the original grid.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import transforms as T
from .base import SegDataset
from .labels import IGNORE_INDEX
from .registry import register_dataset

CLASS_NAMES = (
    "background",
    "aorta",
    "gallbladder",
    "left_kidney",
    "right_kidney",
    "liver",
    "pancreas",
    "spleen",
    "stomach",
)
SPLIT_LISTS = Path(__file__).parent / "splits" / "synapse"
PREPARE = (
    "Download the TransUNet preprocessed Synapse data (train_npz/, test_vol_h5/) or convert the raw "
    "BTCV NIfTI files with `python scripts/prepare_synapse.py RAW_DIR OUT_DIR`, then set data.root."
)


REDO = "re-run `python scripts/prepare_synapse.py RAW_DIR OUT_DIR` or re-download the data"


def _read_list(path: Path) -> list[str]:
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not names:
        raise ValueError(f"split list {path} is empty")
    return names


@register_dataset(
    "synapse",
    reference="Synapse multi-organ CT (BTCV), TransUNet preprocessing and 18/12 split (Chen et al. 2021)",
    splits=("train", "test"),
    prepare=PREPARE,
)
class SynapseDataset(SegDataset):
    """Synapse multi-organ CT: 8 organs + background, 18 training / 12 test volumes.

    Slices of the TransUNet layout (``train``: npz slices; ``test``: h5 volumes). ``label_noise`` is
    a :mod:`datasets.noise` config applied to training draws; ``ignore_background`` maps label 0 to
    255 in every split (the survey authors' code: background is neither trained nor scored)."""

    class_names = CLASS_NAMES
    units = "mm"
    volumetric = True
    #: what to do about bad data, the end of every data error
    remedy = REDO

    def __init__(
        self,
        root: Path,
        split: str,
        *,
        img_size: int = 224,
        augment: bool | None = None,
        seed: int = 0,
        label_noise: Mapping[str, Any] | None = None,
        ignore_background: bool = False,
    ) -> None:
        super().__init__(split, augment=augment, seed=seed, label_noise=label_noise)
        self.root, self.size = Path(root), (int(img_size), int(img_size))
        self.ignore_background = bool(ignore_background)
        lists = self.root / "lists"
        self._spacing = self._read_spacing(self.root / "spacing.json")
        if self._spacing is None:
            self.units = "voxel"
        if split == "train":
            folder = self._folder("train_npz")
            if (lists / "train.txt").is_file():
                self.files = [folder / f"{n}.npz" for n in _read_list(lists / "train.txt")]
                self._check_files(self.files, lists / "train.txt")
            else:
                cases = _read_list(SPLIT_LISTS / "train_cases.txt")
                self.files = sorted(f for c in cases for f in folder.glob(f"{c}_slice*.npz"))
                if not self.files:
                    raise FileNotFoundError(f"no {folder}/caseXXXX_sliceYYY.npz slices of the cases {cases}")
            self.slices = [(i, 0) for i in range(len(self.files))]
        else:
            folder = self._folder("test_vol_h5")
            listing = lists / "test_vol.txt"
            listing = listing if listing.is_file() else SPLIT_LISTS / "test_vol.txt"
            self.files = [folder / f"{n}.npy.h5" for n in _read_list(listing)]
            self._check_files(self.files, listing)
            self.slices = []
            for i, f in enumerate(self.files):
                with self._open(f) as h5:
                    absent = [k for k in ("image", "label") if k not in h5]
                    if absent:
                        missing = " or ".join(map(repr, absent))
                        raise KeyError(f"{f}: no dataset {missing} in it; {self.remedy}")
                    img, lab = h5["image"], h5["label"]
                    if img.shape != lab.shape or img.ndim != 3:
                        raise ValueError(
                            f"{f}: image {img.shape} and label {lab.shape} must be equal [D,H,W] volumes; "
                            + self.remedy
                        )
                    self.slices += [(i, z) for z in range(img.shape[0])]
            cases = [f.name.split(".")[0] for f in self.files]
            absent = [c for c in cases if self._spacing is not None and c not in self._spacing]
            if absent:
                raise ValueError(
                    f"{self.root / 'spacing.json'} has no entry for the test case(s) {', '.join(absent)}; "
                    f"{self.remedy} (or remove spacing.json: HD95 is then reported in voxels)"
                )
        self._h5: dict[int, h5py.File] = {}

    def _read_spacing(self, sidecar: Path) -> dict[str, tuple[float, ...]] | None:
        """The spacing sidecar ``{case: [z, y, x]}`` (mm), validated; None when there is none."""
        if not sidecar.is_file():
            return None
        fix = f"{self.remedy} (or remove spacing.json: HD95 is then reported in voxels)"
        try:
            raw = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{sidecar} is not readable JSON ({e}); {fix}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{sidecar} must map case names to [z, y, x] mm; {fix}")
        for case, value in raw.items():
            ok = (
                isinstance(value, list)
                and len(value) == 3
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
                and all(math.isfinite(v) and v > 0 for v in value)
            )
            if not ok:
                raise ValueError(
                    f"{sidecar}: {case}={value!r} is not three positive voxel sizes [z, y, x] in mm; {fix}"
                )
        return {case: tuple(float(v) for v in value) for case, value in raw.items()}

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Synapse layout: expected folder {folder} (TransUNet layout: train_npz/, test_vol_h5/). "
                + PREPARE
            )
        return folder

    @staticmethod
    def _check_files(files: list[Path], listing: Path) -> None:
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FileNotFoundError(f"{listing} names files missing under {files[0].parent}: {shown}")

    def _open(self, path: Path) -> h5py.File:
        try:
            return h5py.File(path, "r")
        except OSError as e:
            raise OSError(f"cannot read HDF5 volume {path} ({e}); {self.remedy}") from e

    def preflight(self) -> None:
        """Before training. Training split: every slice opens as an intact ``.npz`` holding an
        ``image`` and a ``label`` of one [H,W] size (array headers only: about a millisecond a
        slice). Evaluation split: every label volume is read; values in ``0..num_classes-1`` or 255."""
        if self.split == "train":
            for path in self.files:
                self._check_pair(path, *self._npz_shapes(path))
            return
        for path in self.files:
            with self._open(path) as h5:
                depth = h5["label"].shape[0]
                for z in range(0, depth, 32):  # a few slices at a time: bounded memory
                    try:
                        label = h5["label"][z : z + 32]
                    except (OSError, KeyError) as e:
                        raise OSError(f"cannot read the labels of {path} ({e}); {self.remedy}") from e
                    self._check_label(label, path)

    def _unreadable(self, path: Path, e: BaseException) -> OSError:
        return OSError(
            f"cannot read slice {path} ({type(e).__name__}: {e}; need arrays 'image' and 'label' in an "
            f"intact .npz); {self.remedy}"
        )

    def _npz_shapes(self, path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of the ``image`` and ``label`` arrays of a slice, from their headers."""
        shapes = []
        try:
            with zipfile.ZipFile(path) as z:
                for key in ("image", "label"):
                    with z.open(f"{key}.npy") as f:
                        version = np.lib.format.read_magic(f)
                        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else None
                        header = np.lib.format.read_array_header_2_0 if version == (2, 0) else header
                        if header is None:
                            raise ValueError(f"unsupported .npy format version {version}")
                        shapes.append(tuple(header(f)[0]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise self._unreadable(path, e) from e
        return shapes[0], shapes[1]

    def _check_pair(self, path: Path, image: tuple[int, ...], label: tuple[int, ...]) -> None:
        if len(image) != 2 or image != label:
            raise ValueError(
                f"{path}: image {image} and label {label} must be [H,W] arrays of one size (a label is "
                f"never resized to its image); {self.remedy}"
            )

    def _check_label(self, label: np.ndarray, path: Path) -> np.ndarray:
        """``label`` as int64 after checking that it holds class ids (raises naming ``path``)."""
        label = np.asarray(label)
        if not (np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.floating)):
            raise ValueError(f"{path}: label of dtype {label.dtype} is not class ids; {self.remedy}")
        if np.issubdtype(label.dtype, np.floating) and not np.array_equal(label, np.round(label)):
            raise ValueError(f"{path}: label holds non-integer values; {self.remedy}")
        bad = (label >= self.num_classes) & (label != IGNORE_INDEX) | (label < 0)
        if bad.any():
            raise ValueError(
                f"{path}: label values {sorted(np.unique(label[bad]).tolist())[:10]} are outside the "
                f"{self.num_classes} classes {self.class_names} (and 255 = ignore); {self.remedy}"
            )
        return label.astype(np.int64)

    def __len__(self) -> int:
        return len(self.slices)

    def case_of(self, idx: int) -> str:
        return self.files[self.slices[idx][0]].name.split(".")[0].split("_slice")[0]

    def spacing(self, case: str) -> tuple[float, ...] | None:
        if self._spacing is None:
            return None
        if case not in self._spacing:
            raise KeyError(f"{self.root / 'spacing.json'} has no entry for {case}; {self.remedy}")
        return self._spacing[case]

    def load(self, idx: int) -> dict[str, Any]:
        fi, z = self.slices[idx]
        path = self.files[fi]
        if self.split == "train":
            try:
                with np.load(path) as npz:
                    image, label = npz["image"], npz["label"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                raise self._unreadable(path, e) from e
            self._check_pair(path, np.shape(image), np.shape(label))
        else:
            h5 = self._h5.get(fi)
            if h5 is None:  # opened lazily, per worker process
                h5 = self._h5[fi] = self._open(path)
            try:
                image, label = h5["image"][z], h5["label"][z]
            except (OSError, KeyError) as e:
                raise OSError(f"cannot read slice {z} of {path} ({e}); {self.remedy}") from e
        label = self._check_label(np.asarray(label), path)
        if self.ignore_background:
            label[label == 0] = IGNORE_INDEX
        return {
            "image": np.asarray(image, dtype=np.float32)[None],
            "label": label,
            "case": self.case_of(idx),
            "index": z,
        }

    def augment(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, label = sample["image"], sample["label"]
        if rng.random() > 0.5:
            image, label = T.rot90_flip(image, label, rng)
        elif rng.random() > 0.5:
            fill = IGNORE_INDEX if self.ignore_background else 0
            image, label = T.rotate(image, label, float(rng.uniform(-20, 20)), fill_label=fill)
        return {**sample, "image": image, "label": label.astype(np.int64)}

    def finalize(self, sample: dict[str, Any]) -> dict[str, Any]:
        keep_label = self.split != "train"  # evaluation labels stay at native resolution
        image, label = T.resize(sample["image"], None if keep_label else sample["label"], self.size)
        return {**sample, "image": image, "label": sample["label"] if keep_label else label}

    def __getstate__(self) -> dict[str, Any]:  # h5py handles do not pickle into workers
        return {**self.__dict__, "_h5": {}}
