"""Convert the raw BTCV "Multi-Atlas Abdomen Labeling" CT (Synapse syn3193805) to the TransUNet layout.

    python scripts/prepare_synapse.py RAW_DIR OUT_DIR [--overwrite]

``RAW_DIR`` holds ``img/img00XX.nii.gz`` and ``label/label00XX.nii.gz`` (``RawData/Training`` of the
download; ``RAW_DIR/Training`` and ``RAW_DIR/RawData/Training`` are found too). ``OUT_DIR`` receives
what :mod:`datasets.synapse` reads::

    train_npz/caseXXXX_sliceYYY.npz   image float32 [H,W] in [0,1], label uint8 [H,W]  (18 train cases)
    test_vol_h5/caseXXXX.npy.h5       image float32 [D,H,W], label uint8 [D,H,W]      (12 test cases)
    lists/train.txt, lists/test_vol.txt, spacing.json ({"case0001": [z, y, x]} mm per voxel)

Conventions. HU are clipped to [-125, 275] and scaled to [0, 1] (TransUNet). The 13 BTCV organs become
TransUNet's 8 (``BTCV_TO_SYNAPSE``; esophagus, IVC, portal/splenic vein and adrenals → background 0),
as in mmsegmentation's converter, which follows TransUNet. Volumes are reoriented from their NIfTI
affine to LPS (DICOM) axes and stored as numpy ``[D,H,W] = [z, y, x]`` (SimpleITK's array order): a
slice shows the patient's right on the image left and anterior at the top, and ``D`` runs inferior →
superior. TransUNet never published its conversion; mmsegmentation's stores ``[z, x, flipped y]``,
the same slices turned by 90°, which changes neither the shapes nor any metric, and TransUNet's
rot90/flip augmentation makes training insensitive to it. The split is TransUNet's (shipped in
``datasets/splits/synapse``). Output is written to a temporary folder beside ``OUT_DIR`` and renamed
into place at the end, so an interrupted run never leaves a partial ``OUT_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

HU_WINDOW = (-125.0, 275.0)
#: BTCV label id → TransUNet id: aorta 1, gallbladder 2, left kidney 3, right kidney 4, liver 5,
#: pancreas 6, spleen 7, stomach 8 (BTCV: 1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder,
#: 5 esophagus, 6 liver, 7 stomach, 8 aorta, 9 IVC, 10 portal & splenic vein, 11 pancreas, 12/13 adrenals)
BTCV_TO_SYNAPSE = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
BTCV_MAX_ID = 13
BTCV_TABLE = np.zeros(BTCV_MAX_ID + 1, np.uint8)
BTCV_TABLE[list(BTCV_TO_SYNAPSE)] = list(BTCV_TO_SYNAPSE.values())
LPS = nib.orientations.axcodes2ornt("LPS")
SPLIT_LISTS = Path(__file__).resolve().parents[1] / "datasets" / "splits" / "synapse"
TRAIN_CASES = [int(c.removeprefix("case")) for c in (SPLIT_LISTS / "train_cases.txt").read_text().split()]
TEST_CASES = [int(c.removeprefix("case")) for c in (SPLIT_LISTS / "test_vol.txt").read_text().split()]


def find_raw(raw: Path) -> Path:
    """The folder under ``raw`` that holds ``img/`` and ``label/``."""
    for folder in (raw, raw / "Training", raw / "RawData" / "Training"):
        if (folder / "img").is_dir() and (folder / "label").is_dir():
            return folder
    raise FileNotFoundError(
        f"{raw}: expected folders img/ (img00XX.nii.gz) and label/ (label00XX.nii.gz), e.g. the "
        "RawData/Training folder of the BTCV 'Abdomen' download (Synapse syn3193805)"
    )


def read_lps(path: Path) -> tuple[np.ndarray, list[float]]:
    """A NIfTI volume reoriented to LPS, as float32 ``[z, y, x]``, and its spacing (z, y, x) in mm."""
    try:
        nii = nib.load(path)
        xform = nib.orientations.ornt_transform(nib.io_orientation(nii.affine), LPS)
        lps = nii.as_reoriented(xform)
        volume = lps.get_fdata(dtype=np.float32).transpose(2, 1, 0)
    except Exception as e:  # nibabel raises many types for damaged files
        raise OSError(f"cannot read NIfTI volume {path}: {e}") from e
    return volume, [round(float(s), 6) for s in lps.header.get_zooms()[2::-1]]  # float32 header → mm


def load_case(folder: Path, case: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Image in [0,1] float32 ``[D,H,W]``, TransUNet label uint8 ``[D,H,W]`` and spacing (z, y, x) mm."""
    img_path, label_path = (
        folder / "img" / f"img{case:04d}.nii.gz",
        folder / "label" / f"label{case:04d}.nii.gz",
    )
    (image, spacing), (label, _) = read_lps(img_path), read_lps(label_path)
    if image.shape != label.shape:
        raise ValueError(f"{label_path} has shape {label.shape} but {img_path} has {image.shape} (z, y, x)")
    bad = (label != np.round(label)) | (label < 0) | (label > BTCV_MAX_ID)
    if bad.any():
        values = np.unique(label[bad])[:10].tolist()
        raise ValueError(f"{label_path}: values {values} are not BTCV organ ids 0–{BTCV_MAX_ID}")
    lo, hi = HU_WINDOW
    image = (np.clip(image, lo, hi) - lo) / (hi - lo)
    return image, BTCV_TABLE[label.astype(np.intp)], spacing


def prepare_synapse(
    raw: str | Path,
    out: str | Path,
    *,
    train_cases: Sequence[int] = TRAIN_CASES,
    test_cases: Sequence[int] = TEST_CASES,
    overwrite: bool = False,
) -> Path:
    """Write the TransUNet layout of ``raw`` to ``out`` (atomically) and return ``out``."""
    folder, out = find_raw(Path(raw)), Path(out)
    cases = [*train_cases, *test_cases]
    missing = [
        str(p)
        for c in cases
        for p in (folder / "img" / f"img{c:04d}.nii.gz", folder / "label" / f"label{c:04d}.nii.gz")
        if not p.is_file()
    ]
    if missing:
        raise FileNotFoundError(f"missing BTCV volumes: {', '.join(missing)}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; remove it or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        for sub in ("train_npz", "test_vol_h5", "lists"):
            (tmp / sub).mkdir()
        slices, spacing = [], {}
        for c in cases:
            name = f"case{c:04d}"
            image, label, spacing[name] = load_case(folder, c)
            if c in train_cases:
                for z in range(image.shape[0]):
                    slices.append(f"{name}_slice{z:03d}")
                    np.savez(tmp / "train_npz" / f"{slices[-1]}.npz", image=image[z], label=label[z])
            else:
                with h5py.File(tmp / "test_vol_h5" / f"{name}.npy.h5", "w") as h5:
                    h5.create_dataset("image", data=image)
                    h5.create_dataset("label", data=label)
            print(f"{name}: {image.shape[0]} slices of {image.shape[1]}x{image.shape[2]}, {spacing[name]} mm")
        (tmp / "lists" / "train.txt").write_text("".join(f"{s}\n" for s in slices))
        (tmp / "lists" / "test_vol.txt").write_text("".join(f"case{c:04d}\n" for c in test_cases))
        (tmp / "spacing.json").write_text(json.dumps(spacing, indent=1) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="folder with img/ and label/ (BTCV RawData/Training)")
    parser.add_argument("out", type=Path, help="output folder (data.root of the synapse dataset)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    out = prepare_synapse(args.raw, args.out, overwrite=args.overwrite)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
