"""Time losses.distance against scipy and OpenCV on Cityscapes- and Synapse-size label batches.

The work measured is what the boundary losses do every step: Kervadec's signed maps of all classes
of a batch (``signed_distance_maps``; scipy/OpenCV/edt as in the authors' ``one_hot2dist``: two EDTs
per present class) and the inside distances (``label_distance``; one EDT per present class
elsewhere, one multi-label ``edt`` call per image here). Every method's maps are checked against
scipy's. Single-threaded by default (``--threads``), best of ``--repeat`` runs; writes a Markdown
table.

    .venv/bin/python scripts/bench_distance.py           # ~1 min on one core; writes results/perf/distance.md
    .venv/bin/python scripts/bench_distance.py --quick   # small inputs, seconds; prints only
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path

import cv2
import edt
import numpy as np
import scipy
import torch
from scipy import ndimage

from losses.distance import label_distance, signed_distance_maps

IGNORE = 255


def cityscapes_batch(
    rng: np.random.Generator, n: int, shape: tuple[int, int], classes: int = 19
) -> np.ndarray:
    """Voronoi label maps (80 cells, ``classes`` ids) with an ignored bottom band, like road-scene crops."""
    out = np.empty((n, *shape), np.int64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(n):
        seeds = rng.random((80, 2)) * shape
        best = np.full(shape, np.inf)
        for (sy, sx), c in zip(seeds, rng.permutation(np.arange(80) % classes), strict=True):
            d = (yy - sy) ** 2 + (xx - sx) ** 2
            out[i][d < best] = c
            best = np.minimum(best, d)
        out[i, -shape[0] // 10 :] = IGNORE
    return out


def synapse_batch(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Background with 2–5 elliptic organs of 8 classes per slice (most organs absent, as in CT)."""
    out = np.zeros((n, size, size), np.int64)
    yy, xx = np.mgrid[:size, :size] / size
    for i in range(n):
        for organ in rng.choice(np.arange(1, 9), rng.integers(2, 6), replace=False):
            cy, cx = rng.uniform(0.25, 0.75, 2)
            ry, rx = rng.uniform(0.03, 0.15, 2)
            out[i][((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = organ
    return out


def per_class_signed(labels: np.ndarray, classes: int, transform: Callable) -> np.ndarray:
    """Kervadec's ``one_hot2dist`` with a pluggable EDT: two transforms per present class."""
    out = np.zeros((labels.shape[0], classes, *labels.shape[1:]), np.float32)
    for b, lab in enumerate(labels):
        for c in range(classes):
            pos = lab == c
            if pos.any():
                neg = ~pos
                out[b, c] = transform(neg) * neg - (transform(pos) - 1) * pos
    return out


def per_class_inside(labels: np.ndarray, transform: Callable) -> np.ndarray:
    """Each pixel's distance to another label, one transform per label present."""
    out = np.zeros(labels.shape, np.float32)
    for b, lab in enumerate(labels):
        for value in np.unique(lab):
            m = lab == value
            out[b][m] = transform(m)[m]
    return out


def transforms(threads: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The per-mask EDTs compared; scipy is the reference."""
    return {
        "scipy": ndimage.distance_transform_edt,
        "cv2 DIST_MASK_PRECISE": lambda m: cv2.distanceTransform(
            m.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        ),
        "edt, per class": lambda m: edt.edt(m, black_border=False, parallel=threads),
    }


def best_of(fn: Callable, repeat: int) -> tuple[float, np.ndarray]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def bench_case(name: str, labels: np.ndarray, classes: int, repeat: int, threads: int) -> list[dict]:
    """Rows (case, method, ms, speed-up, max error) for both kinds of maps on one batch."""
    target = torch.from_numpy(labels)
    kinds = {
        "signed maps": (
            partial(per_class_signed, labels, classes),
            lambda: signed_distance_maps(target, classes).numpy(),
        ),
        "inside distances": (partial(per_class_inside, labels), lambda: label_distance(target).numpy()),
    }
    rows = []
    for kind, (per_class, ours) in kinds.items():
        timings = {m: best_of(partial(per_class, t), repeat) for m, t in transforms(threads).items()}
        timings["losses.distance"] = best_of(ours, repeat)
        reference_time, reference = timings["scipy"]
        for method, (seconds, maps) in timings.items():
            rows.append(
                {
                    "case": f"{name}: {kind}",
                    "method": method,
                    "ms": 1000 * seconds,
                    "speedup": reference_time / seconds,
                    "error": float(np.abs(maps - reference).max()),
                }
            )
    return rows


def machine(threads: int) -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln]
        cpu = names[0] if names else cpu
    return f"{cpu}, {threads} thread(s); {platform.system()} {platform.release()}"


def render(rows: list[dict], cases: list[str], threads: int, repeat: int, quick: bool) -> str:
    pkgs = {"numpy": np.__version__, "scipy": scipy.__version__, "torch": torch.__version__}
    pkgs |= {"edt": version("edt"), "opencv": cv2.__version__}
    lines = [
        "# Distance maps: losses.distance vs scipy and OpenCV",
        "",
        f"Generated by `scripts/bench_distance.py{' --quick' if quick else ''}`. "
        f"Machine: {machine(threads)}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in pkgs.items()) + f". Best of {repeat} runs.",
        "",
        "Batches: " + "; ".join(cases) + ". Signed maps are Kervadec's `one_hot2dist` for every class "
        "(boundary loss); scipy, OpenCV (`DIST_L2`, `DIST_MASK_PRECISE`) and `edt` run it as the authors "
        "do, two EDTs per present class, `losses.distance.signed_distance_maps` takes the inside "
        "distances of all classes from one multi-label `edt` call per image and one EDT per present "
        "class for the outside. Inside distances (dmce, boundary_aware, region_wise, ABL-style maps): "
        "one EDT per label present vs one `label_distance` call per image. 'max error' is the largest "
        "absolute difference from scipy, in pixels.",
        "",
        "| batch: maps | method | ms / batch | speed-up vs scipy | max error |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['method']} | {r['ms']:.1f} | {r['speedup']:.1f}× | {r['error']:.1e} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs; no file unless --out is given")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch/edt and OpenCV")
    parser.add_argument("--out", type=Path, help="Markdown output (default: results/perf/distance.md)")
    args = parser.parse_args()
    if args.repeat < 1 or args.threads < 1:
        parser.error("--repeat and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    s = 4 if args.quick else 1
    batches = [
        (
            f"Cityscapes crops 2×{512 // s}×{1024 // s}, 19 classes",
            cityscapes_batch(rng, 2, (512 // s, 1024 // s)),
            19,
        ),
        (f"Synapse slices 8×{512 // s}², 9 classes", synapse_batch(rng, 8, 512 // s), 9),
        (f"Synapse TransUNet inputs 24×{224 // s}², 9 classes", synapse_batch(rng, 24, 224 // s), 9),
    ]
    rows = [
        row
        for name, labels, classes in batches
        for row in bench_case(name, labels, classes, args.repeat, args.threads)
    ]
    text = render(rows, [name for name, _, _ in batches], args.threads, args.repeat, args.quick)
    print(text)
    out = args.out or (None if args.quick else Path("results/perf/distance.md"))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
