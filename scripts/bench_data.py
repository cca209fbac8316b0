"""Loader throughput: training samples per second of one worker, per dataset, on generated data.

    python scripts/bench_data.py [--draws 24] [--repeats 3] [--out results/perf/data.md]

Trees in the official formats and at the real resolutions (Cityscapes 2048×1024, Synthia 1280×760,
Synapse 512×512 slices via ``prepare_synapse.py``) are written to a temporary folder, then each
training pipeline is timed in one process with one thread (what one DataLoader worker does), best of
``--repeats`` runs of ``--draws`` samples: whole items (``dataset[i]``, PNG decode included), the
augmentation alone, and the label-noise types. The street-scene augmentation, one affine warp of the
crop, is compared side by side with the reference order (mmsegmentation's): rescale the whole image,
pad, crop. Writes Markdown tables to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import MethodType

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the datasets package and the format writers

from fixtures_formats import load_script, write_btcv, write_cityscapes, write_synthia  # noqa: E402

import datasets  # noqa: E402
from datasets import transforms as T  # noqa: E402
from datasets.cityscapes import StreetSceneDataset  # noqa: E402
from datasets.noise import apply_label_noise  # noqa: E402

NOISE = [
    {"type": "pixel", "rate": 0.1},
    {"type": "component", "rate": 0.1},
    {"type": "boundary", "rate": 0.5, "radius": 3},
]


def resize_pad_crop(self: StreetSceneDataset, sample: dict, rng: np.random.Generator) -> dict:
    """The reference augmentation: rescale the whole image, pad to the crop, crop, flip."""
    image, label = sample["image"], sample["label"]
    h, w = label.shape
    s = float(rng.uniform(*self.scale))
    size = (max(int(w * s + 0.5), 1), max(int(h * s + 0.5), 1))
    image = np.stack([cv2.resize(c, size, interpolation=cv2.INTER_LINEAR) for c in image])
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST_EXACT)
    image, label = T.pad_to(image, label, self.crop_size)
    (ch, cw), (hh, ww) = self.crop_size, label.shape
    y0, x0 = int(rng.integers(0, hh - ch + 1)), int(rng.integers(0, ww - cw + 1))
    image, label = image[:, y0 : y0 + ch, x0 : x0 + cw], label[y0 : y0 + ch, x0 : x0 + cw]
    image, label = T.hflip(image, label, rng)
    return {**sample, "image": image, "label": label}


def seconds_per_call(fn: Callable[[int], object], calls: int, repeats: int) -> float:
    """Mean seconds of ``fn(i)`` over ``calls`` consecutive ``i``, best of ``repeats`` (after a warm-up)."""
    fn(0)
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            fn(r * calls + i)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def markdown(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def write_trees(tmp: Path) -> dict[str, Path]:
    cases = [f"aachen_{i:06d}_000019" for i in range(6)]
    write_cityscapes(tmp / "cityscapes", "train", cases, size=(1024, 2048), cell=64)
    stems = [f"{i:07d}" for i in range(12)]  # about 10 % are val: most are train
    write_synthia(tmp / "synthia", stems, size=(760, 1280), cell=48)
    write_btcv(tmp / "btcv", [5, 8], shape=(512, 512, 12))
    prepare = load_script("prepare_synapse").prepare_synapse
    prepare(tmp / "btcv", tmp / "synapse", train_cases=[5], test_cases=[8])
    return {name: tmp / name for name in ("cityscapes", "synthia", "synapse")}


def street_rows(ds: StreetSceneDataset, n: int, reps: int) -> tuple[tuple, tuple, list]:
    """Whole-item and augmentation-only timings, ours vs the reference, and the crops' labels."""
    reference = MethodType(resize_pad_crop, ds)
    loaded = [ds.load(i) for i in range(len(ds))]

    def augmented(i: int, how: Callable = ds.augment) -> dict:
        return how(loaded[i % len(loaded)], np.random.default_rng([ds.seed, i]))

    whole_ours = seconds_per_call(ds.__getitem__, n, reps)
    ds.augment = reference  # the same loading, random draws and finalize, on the reference path
    whole_ref = seconds_per_call(ds.__getitem__, n, reps)
    del ds.augment
    aug_ours = seconds_per_call(augmented, n, reps)
    aug_ref = seconds_per_call(lambda i: augmented(i, reference), n, reps)
    h, w = loaded[0]["label"].shape
    size = f"{w}×{h} → {ds.crop_size[1]}×{ds.crop_size[0]}"
    whole = (size, f"{1 / whole_ours:.1f}", f"{1 / whole_ref:.1f}", f"{whole_ref / whole_ours:.2f}×")
    aug = (size, f"{1e3 * aug_ours:.1f}", f"{1e3 * aug_ref:.1f}", f"{aug_ref / aug_ours:.2f}×")
    return whole, aug, [augmented(i)["label"] for i in range(n)]


def breakdown(ds: StreetSceneDataset, n: int, reps: int) -> list[tuple[str, str, str]]:
    """Where one training sample's time goes: PNG decodes, the rest of ``load``, augmentation,
    ``finalize`` + tensors, and the target maps of the crop (``datasets.gt_maps``)."""
    from datasets.cityscapes import read_png, read_rgb
    from datasets.gt_maps import WithGTMaps

    pairs = ds.pairs
    photo = seconds_per_call(lambda i: read_rgb(pairs[i % len(pairs)][1]), n, reps)
    label = seconds_per_call(lambda i: read_png(pairs[i % len(pairs)][2]), n, reps)
    load = seconds_per_call(lambda i: ds.load(i % len(ds)), n, reps)
    loaded = [ds.load(i) for i in range(len(ds))]
    augment = seconds_per_call(
        lambda i: ds.augment(loaded[i % len(loaded)], np.random.default_rng([ds.seed, i])), n, reps
    )
    item = seconds_per_call(ds.__getitem__, n, reps)
    stages = [
        ("decode the photo PNG (`cv2.imread` + BGR→RGB)", photo),
        ("decode the label PNG", label),
        ("rest of `load`: label ids → train ids, normalise the whole image", load - photo - label),
        ("augmentation: scale-crop warp + flip (`augment`)", augment),
        ("`finalize`, tensors", item - load - augment),
    ]
    rows = [(what, f"{1e3 * t:.1f}", f"{100 * t / item:.0f} %") for what, t in stages]
    rows.append(("**one training sample** (`dataset[i]`)", f"**{1e3 * item:.1f}**", "100 %"))
    for maps in (("label_distance",), ("signed_distance",)):
        wrapped = WithGTMaps(ds, maps)
        t = seconds_per_call(wrapped.__getitem__, n, reps) - item
        rows.append(
            (
                f"+ target map `{maps[0]}` of the crop (in the worker)",
                f"{1e3 * t:.1f}",
                f"+{100 * t / item:.0f} %",
            )
        )
    return rows


BREAKDOWN_TITLE = "## Where a Cityscapes training sample's time goes (ms, one worker)"
BREAKDOWN_NOTE = (
    "Decoding dominates, and a PNG cannot be decoded in part: its pixels are one zlib stream of "
    "row-filtered scanlines, so a window needs every row above its last one, and neither OpenCV nor "
    "Pillow can stop early or skip columns (`IMREAD_REDUCED_*` decodes fully, then shrinks). A random "
    "512×1024 crop of the rescaled image reaches, on average, well into the image's lower half, so "
    "stopping at its last row would save little even with a custom decoder. The warp already touches "
    "only the crop (`datasets.transforms.scale_crop`). What is left is normalising the whole image "
    "in `load` before the crop (its row above): warping the uint8 photo and normalising only the crop "
    "would save most of that row; it changes `load`'s contract (normalised float images), which the "
    "evaluation path also uses, and is left as the next step. Of the target maps, `label_distance` is "
    "one multi-label EDT per crop; the per-class maps (`signed_distance`, `unsigned_distance`) take one "
    "EDT per class present, several times the sample's own cost: the loader's answer to the GPU's "
    "demand is more workers, and `scripts/gpu_check.py` reports the `num_workers` that keeps up.\n"
)


def breakdown_section(rows: list, cmd: str, note: str) -> str:
    return (
        f"{BREAKDOWN_TITLE}\n\n`python scripts/bench_data.py {cmd}`, 2048×1024 photos, 1024×512 crops, one "
        f"thread.{' ' + note if note else ''}\n\n"
        + markdown(("stage", "ms", "share"), rows)
        + "\n"
        + BREAKDOWN_NOTE
    )


def noisy(labels: list[np.ndarray], cfg: dict, i: int) -> np.ndarray:
    return apply_label_noise(labels[i % len(labels)], np.random.default_rng(i), num_classes=19, **cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=24, help="samples per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "perf" / "data.md")
    parser.add_argument(
        "--breakdown-only",
        action="store_true",
        help="only (re)write the section on where a Cityscapes sample's time goes, keeping the rest",
    )
    parser.add_argument("--note", default="", help="a sentence on the machine's load for that section")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    n, reps = args.draws, args.repeats
    if args.breakdown_only:
        with tempfile.TemporaryDirectory() as tmp:
            cases = [f"aachen_{i:06d}_000019" for i in range(6)]
            write_cityscapes(Path(tmp) / "cityscapes", "train", cases, size=(1024, 2048), cell=64)
            ds = datasets.create_dataset("cityscapes", root=Path(tmp) / "cityscapes", split="train")
            rows = breakdown(ds, n, reps)
        section = breakdown_section(rows, f"--breakdown-only --draws {n} --repeats {reps}", args.note)
        old = args.out.read_text() if args.out.exists() else "# Loader throughput (one worker)\n"
        kept = old.split("\n" + BREAKDOWN_TITLE)[0].rstrip("\n")
        args.out.write_text(kept + "\n\n" + section)
        print(section)
        return
    whole, augment, noise = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        roots = write_trees(Path(tmp))
        for name in ("cityscapes", "synthia"):
            ds = datasets.create_dataset(name, root=roots[name], split="train")
            w, a, labels = street_rows(ds, n, reps)
            whole.append((name, *w))
            augment.append((name, *a))
            if name == "cityscapes":
                stages = breakdown(ds, n, reps)
                for cfg in NOISE:
                    t = seconds_per_call(partial(noisy, labels, cfg), n, reps)
                    noise.append((", ".join(f"{k}={v}" for k, v in cfg.items()), f"{1e3 * t:.1f}"))
        synapse = datasets.create_dataset("synapse", root=roots["synapse"], split="train")
        t = seconds_per_call(synapse.__getitem__, n, reps)
        whole.append(("synapse", "512×512 → 224×224", f"{1 / t:.1f}", "–", "–"))
    columns = ("dataset", "image → crop", "ours", "reference", "speed-up")
    text = (
        "# Loader throughput (one worker)\n\n"
        f"`python scripts/bench_data.py --draws {n} --repeats {reps}` on generated data in the official "
        "formats at the real resolutions (a 2048×1024 photo is a ~2.2 MB PNG, as in Cityscapes). One "
        "process, one thread for cv2 and torch (a DataLoader worker); best of the repeats. The reference "
        "augmentation rescales the whole image, then pads and crops (mmsegmentation's order); ours warps "
        "only the crop (`datasets.transforms.scale_crop`); both run in the same process, one after the "
        f"other. Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"OpenCV {cv2.__version__}, NumPy {np.__version__}.\n\n"
        "## Training samples per second (`dataset[i]`, PNG decode included)\n\n"
        + markdown(columns, whole)
        + "\n## Augmentation only (ms per sample)\n\n"
        + markdown(columns, augment)
        + "\n## Label noise (ms per 1024×512 Cityscapes training crop)\n\n"
        + markdown(("label_noise", "ms"), noise)
        + "\n"
        + breakdown_section(stages, f"--draws {n} --repeats {reps}", args.note)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
