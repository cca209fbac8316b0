"""Export Cityscapes predictions in the format of the official evaluator, and optionally run it.

    python scripts/export_cityscapes.py PRED_DIR OUT_DIR [--evaluate CITYSCAPES_ROOT]

``PRED_DIR`` holds one train-id map per image at full resolution (``0–18``, ``255`` = no prediction),
named by its case, e.g. ``frankfurt_000000_000294.png`` (8-bit PNG) or ``….npy``. Each is written
as ``OUT_DIR/frankfurt_000000_000294_pred.png``: an 8-bit PNG of Cityscapes *label ids* (0–33; 255 →
0 "unlabeled"), which is what ``csEvalPixelLevelSemanticLabeling`` matches (``<city>_<seq>_<frame>*.png``)
and reads; train ids are the classic mistake that scores an mIoU near 0. ``--evaluate`` then runs that
evaluator on ``CITYSCAPES_ROOT/gtFine/val`` and prints its report.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets.cityscapes import train_ids_to_label_ids

OFFICIAL = "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"


def export_prediction(pred: np.ndarray, case: str, out_dir: str | Path) -> Path:
    """Write the train-id map ``pred [H,W]`` of image ``case`` as ``out_dir/<case>_pred.png`` (label ids)."""
    if pred.ndim != 2:
        raise ValueError(f"prediction for {case} must be a [H,W] train-id map; got shape {pred.shape}")
    path = Path(out_dir) / f"{case}_pred.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), train_ids_to_label_ids(pred)):
        raise OSError(f"could not write {path}")
    return path


def export_folder(pred_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Export every ``<case>.png`` / ``<case>.npy`` train-id map of ``pred_dir``."""
    files = sorted(p for p in Path(pred_dir).iterdir() if p.suffix in (".png", ".npy"))
    if not files:
        raise FileNotFoundError(f"{pred_dir}: no <case>.png or <case>.npy train-id maps to export")
    written = []
    for f in files:
        pred = np.load(f) if f.suffix == ".npy" else cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if pred is None:
            raise OSError(f"cannot read prediction {f}")
        written.append(export_prediction(pred, f.stem, out_dir))
    return written


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def evaluate_official(
    cityscapes_root: str | Path, results_dir: str | Path, quiet: bool = False
) -> dict[str, Any]:
    """Run cityscapesscripts' pixel-level evaluator on ``gtFine/val`` and return its result dict.

    The evaluator is configured as its console script is, through ``CITYSCAPES_DATASET`` and
    ``CITYSCAPES_RESULTS`` (its module reads them on import, hence the reload). Keys include
    ``classScores`` (IoU per class name) and ``averageScoreClasses`` (mIoU over the 19 classes). Its
    instance-weighted iIoU calls ``np.in1d``, which NumPy 2.4 removed; there it is switched off.
    """
    with _environment(CITYSCAPES_DATASET=str(cityscapes_root), CITYSCAPES_RESULTS=str(results_dir)):
        official = importlib.reload(importlib.import_module(OFFICIAL))
        args = official.args
        args.evalInstLevelScore = hasattr(np, "in1d")
        args.JSONOutput, args.quiet = False, quiet
        ground_truth = sorted(glob.glob(args.groundTruthSearch))
        if not ground_truth:
            raise FileNotFoundError(f"no ground truth matches {args.groundTruthSearch}")
        try:
            predictions = [official.getPrediction(args, gt) for gt in ground_truth]
            return official.evaluateImgLists(predictions, ground_truth, args)
        except SystemExit as e:  # the evaluator reports errors by printing them and exiting
            raise RuntimeError(
                f"the official Cityscapes evaluator stopped (see its ERROR line above): {e}"
            ) from e


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pred_dir", type=Path, help="train-id maps named <case>.png / <case>.npy")
    parser.add_argument("out_dir", type=Path, help="where <case>_pred.png label-id maps are written")
    parser.add_argument("--evaluate", type=Path, metavar="CITYSCAPES_ROOT", help="run the official evaluator")
    args = parser.parse_args(argv)
    written = export_folder(args.pred_dir, args.out_dir)
    print(f"wrote {len(written)} predictions to {args.out_dir}")
    if args.evaluate:
        result = evaluate_official(args.evaluate, args.out_dir)
        print(f"official mIoU (19 classes): {result['averageScoreClasses']:.4f}")


if __name__ == "__main__":
    main()
