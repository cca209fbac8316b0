"""Time bench.metrics' HD95, NSD, ASSD and Boundary IoU against medpy, MONAI and the official
Boundary IoU definition on Synapse- and Cityscapes-size synthetic data.

Single-threaded throughout; times are CPU seconds (``time.process_time``), which a shared machine
disturbs less than wall time. Checks that the values agree (HD95: ours vs medpy pooled and MONAI's
max of the directed 95th percentiles; NSD vs MONAI ``compute_surface_dice``; ASSD vs medpy ``assd``;
Boundary IoU counts vs a per-class cv2 transcription of ``mask_to_boundary``), reports absolute times
and ratios, times the full synthetic Synapse evaluation (12 volumes × 8 organs) with today's metrics
(DSC, IoU, HD95) and with all of them (+ NSD, ASSD) on the same volumes, and writes a Markdown file.
medpy runs once per item (it takes seconds); ours and MONAI take the best of 3.

    .venv/bin/python scripts/bench_metrics.py          # ~3 min, one core; writes results/perf/metrics.md
    .venv/bin/python scripts/bench_metrics.py --quick  # smaller inputs, seconds; prints only
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import scipy
import torch
from medpy.metric import binary as medpy_binary
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy.spatial import cKDTree

from bench.metrics import boundary_counts, dilation_width, hd95, hd95_directed, measure_classes, measure_pair
from bench.protocols import score_case
from datasets import IGNORE_INDEX

TOLERANCE = 1.0  # NSD τ in mm (data/synapse)

SPACING = (3.0, 0.78, 0.78)
ORGANS = ("aorta", "gallbladder", "left kidney", "right kidney", "liver", "pancreas", "spleen", "stomach")
# per organ: centre (fractions of depth, height, width) and radii (slices at depth 100, pixels at 512²)
ANATOMY = (
    ((0.50, 0.58, 0.50), (45, 11, 11)),
    ((0.45, 0.60, 0.36), (5, 16, 12)),
    ((0.55, 0.62, 0.72), (10, 30, 22)),
    ((0.55, 0.62, 0.28), (10, 30, 22)),
    ((0.40, 0.45, 0.30), (25, 110, 90)),
    ((0.50, 0.52, 0.52), (6, 15, 60)),
    ((0.40, 0.45, 0.78), (12, 40, 30)),
    ((0.35, 0.40, 0.62), (15, 55, 45)),
)


def paint_ellipsoid(labels: np.ndarray, centre, radii, value: int) -> None:
    """Set an axis-aligned ellipsoid of ``labels`` to ``value``, touching only its bounding box."""
    box = tuple(
        slice(max(int(c - r) - 1, 0), min(int(c + r) + 2, n))
        for c, r, n in zip(centre, radii, labels.shape, strict=True)
    )
    grid = np.ogrid[box]
    inside = sum(((x - c) / r) ** 2 for x, c, r in zip(grid, centre, radii, strict=True)) <= 1
    labels[box][inside] = value


def synapse_case(rng: np.random.Generator, depth: int, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt) uint8 ``[depth, size, size]``: 8 organs; pred shifted/rescaled, with false positives."""
    gt = np.zeros((depth, size, size), np.uint8)
    pred = np.zeros_like(gt)
    scale = np.array([depth / 100, size / 512, size / 512])
    by_size = sorted(range(1, 9), key=lambda label: -np.prod(ANATOMY[label - 1][1]))
    for label in by_size:  # small organs are painted last, on top of large ones
        frac, radii = ANATOMY[label - 1]
        centre = np.array(frac) * gt.shape
        radii = np.array(radii) * scale
        paint_ellipsoid(gt, centre, radii, label)
        shift = rng.integers(-2, 3, 3)
        paint_ellipsoid(pred, centre + shift, radii * rng.uniform(0.93, 1.07, 3), label)
        if rng.random() < 0.5:  # a small false-positive blob some 30 voxels away
            blob = centre + rng.choice([-1, 1], 3) * np.array([4, 30, 30])
            paint_ellipsoid(pred, blob, np.array([2, 5, 5]), label)
    return pred, gt


def cityscapes_image(rng: np.random.Generator, shape=(1024, 2048), k: int = 19):
    """(pred, gt) uint8 label maps: Voronoi regions of all k classes; pred with jittered seeds + blobs.

    The bottom band of gt is 255 (ignored), like Cityscapes' ego vehicle.
    """
    seeds = rng.uniform(0, 1, (6 * k, 2)) * shape
    classes = np.concatenate([np.arange(k), rng.integers(0, k, 5 * k)])
    pixels = np.indices(shape).reshape(2, -1).T
    gt = classes[cKDTree(seeds).query(pixels, workers=1)[1]].reshape(shape).astype(np.uint8)
    moved = seeds + rng.normal(0, 6, seeds.shape)
    pred = classes[cKDTree(moved).query(pixels, workers=1)[1]].reshape(shape).astype(np.uint8)
    for _ in range(40):
        y, x, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(4, 16)
        yy, xx = np.ogrid[: shape[0], : shape[1]]
        pred[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = rng.integers(0, k)
    gt[-shape[0] // 12 :] = 255
    return pred, gt


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    """Least CPU time of ``repeat`` calls (CPU time, not wall time: the machine may be shared)."""
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        value = fn()
        best = min(best, time.process_time() - t0)
    return best, value


def monai_hd95(pred: np.ndarray, gt: np.ndarray, spacing) -> np.ndarray:
    """MONAI's max-of-directed HD95 per channel; pred/gt one-hot ``[C, ...]`` bool."""
    y_pred, y = torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]
    kwargs = {"include_background": True, "percentile": 95, "spacing": spacing}
    return compute_hausdorff_distance(y_pred, y, **kwargs)[0].double().numpy()


def monai_nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float, spacing) -> float:
    """MONAI's NSD of two boolean masks (CPU tensors, one channel)."""
    y_pred, y = torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None]
    return float(compute_surface_dice(y_pred, y, [tolerance], include_background=True, spacing=spacing))


def rel_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def bench_synapse_organs(rng, depth: int, organs: list[int]) -> list[dict]:
    pred, gt = synapse_case(rng, depth)
    out = []
    for label in organs:
        p, g = pred == label, gt == label
        t_ours, ours = best_of(lambda p=p, g=g: hd95(p, g, SPACING))
        t0 = time.process_time()
        ref = medpy_binary.hd95(p, g, voxelspacing=SPACING)
        t_medpy = time.process_time() - t0
        t_monai, monai = best_of(lambda p=p, g=g: monai_hd95(p[None], g[None], list(SPACING))[0])
        directed = max(hd95_directed(p, g, SPACING))
        out.append(
            {
                "item": f"{ORGANS[label - 1]}, {depth}×512×512 ({int(g.sum())} vox)",
                "ours": t_ours,
                "medpy": t_medpy,
                "monai": t_monai,
                "agree": f"medpy {rel_diff(ours, ref):.1e}, MONAI {rel_diff(directed, monai):.1e}",
            }
        )
    return out


def bench_cityscapes(rng, shape) -> dict:
    pred, gt = cityscapes_image(rng, shape)
    classes = list(range(19))
    t_ours, rows = best_of(
        lambda: score_case("cityscapes", pred, gt, classes=classes, spacing=None, ignore_index=IGNORE_INDEX)
    )
    valid = gt != IGNORE_INDEX
    t0 = time.process_time()
    ref = [medpy_binary.hd95((pred == c) & valid, gt == c) for c in classes]
    t_medpy = time.process_time() - t0
    onehot_p = np.stack([(pred == c) & valid for c in classes])
    onehot_g = np.stack([gt == c for c in classes])
    t_monai, monai = best_of(lambda: monai_hd95(onehot_p, onehot_g, None))
    ours = [r["hd95"] for r in rows]
    directed = [max(r["hd95_pred_gt"], r["hd95_gt_pred"]) for r in rows]
    return {
        "item": f"Cityscapes {shape[0]}×{shape[1]}, 19 classes (per image)",
        "ours": t_ours,
        "medpy": t_medpy,
        "monai": t_monai,
        "agree": f"medpy {rel_diff(ours, ref):.1e}, MONAI {rel_diff(directed, monai):.1e}",
    }


def bench_boundary_organs(rng, depth: int, organs: list[int]) -> list[dict]:
    """NSD vs MONAI and ASSD vs medpy per organ, and ours for HD95 + NSD + ASSD from one measurement."""
    pred, gt = synapse_case(rng, depth)
    out = []
    for label in organs:
        p, g = pred == label, gt == label
        t_nsd, ours_nsd = best_of(lambda p=p, g=g: measure_pair(p, g, SPACING).nsd(TOLERANCE))
        t_monai, ref_nsd = best_of(lambda p=p, g=g: monai_nsd(p, g, TOLERANCE, list(SPACING)))
        t_assd, ours_assd = best_of(lambda p=p, g=g: measure_pair(p, g, SPACING).assd)
        t0 = time.process_time()
        ref_assd = medpy_binary.assd(p, g, voxelspacing=SPACING)
        t_medpy = time.process_time() - t0

        def all_three(p=p, g=g):
            m = measure_pair(p, g, SPACING)
            return m.hd95, m.nsd(TOLERANCE), m.assd

        t_all, _ = best_of(all_three)
        out.append(
            {
                "item": f"{ORGANS[label - 1]}, {depth}×512×512 ({int(g.sum())} vox)",
                "nsd": t_nsd,
                "monai": t_monai,
                "nsd_agree": f"{ours_nsd:.6f} vs {ref_nsd:.6f} ({rel_diff(ours_nsd, ref_nsd):.1e})",
                "assd": t_assd,
                "medpy": t_medpy,
                "assd_agree": f"{rel_diff(ours_assd, ref_assd):.1e}",
                "all": t_all,
            }
        )
    return out


def official_boundary_counts(pred: np.ndarray, gt: np.ndarray, classes, ratio: float = 0.02) -> list:
    """Per class: the official mask_to_boundary (cv2, d 3×3 erosions of the zero-padded mask) of pred
    and gt, intersection and union, the predicted boundary on ignored gt left out (VOID rule)."""
    import cv2

    d = dilation_width(gt.shape, ratio)
    kernel, void = np.ones((3, 3), np.uint8), gt == IGNORE_INDEX
    out = []
    for c in classes:
        edges = []
        for mask in ((pred == c).astype(np.uint8), (gt == c).astype(np.uint8)):
            padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
            edges.append((mask - cv2.erode(padded, kernel, iterations=d)[1:-1, 1:-1]) > 0)
        pb, gb = edges
        inter = int((pb & gb).sum())
        out.append((inter, int(pb.sum()) + int(gb.sum()) - inter - int((pb & void).sum())))
    return out


def bench_boundary_iou(rng, shape) -> dict:
    pred, gt = cityscapes_image(rng, shape)
    classes = list(range(19))
    t_ours, ours = best_of(lambda: boundary_counts(pred, gt, classes, ignore_index=IGNORE_INDEX))
    t_ref, ref = best_of(lambda: official_boundary_counts(pred, gt, classes))
    same = [ours[c] for c in classes] == ref
    return {
        "item": f"Cityscapes {shape[0]}×{shape[1]}, 19 classes, d = {dilation_width(shape, 0.02)} px",
        "ours": t_ours,
        "ref": t_ref,
        "agree": "identical counts" if same else "COUNTS DIFFER",
    }


def hd95_only(pred: np.ndarray, gt: np.ndarray) -> list:
    """Today's default-protocol work per case: DSC, IoU, pooled and directed HD95 of the 8 organs."""
    pairs = measure_classes(pred, gt, range(1, 9), SPACING, 1, ignore_index=IGNORE_INDEX)
    return [(m.dsc, m.iou, m.hd95, *m.hd95_directed) for m in pairs.values()]


def bench_synapse_evaluation(rng, n_cases: int) -> tuple[float, float, int]:
    """CPU seconds over n_cases volumes × 8 organs (generation not timed): today's metrics, then
    ``score_case("default")`` with all of them, on the same volumes; and the voxels in all."""
    today = everything = 0.0
    voxels = 0
    for _ in range(n_cases):
        pred, gt = synapse_case(rng, int(rng.integers(85, 150)))
        t0 = time.process_time()
        hd95_only(pred, gt)
        t1 = time.process_time()
        score_case(
            "default",
            pred,
            gt,
            classes=range(1, 9),
            spacing=SPACING,
            nsd_tolerance=TOLERANCE,
            ignore_index=IGNORE_INDEX,
        )
        everything += time.process_time() - t1
        today += t1 - t0
        voxels += gt.size
    return today, everything, voxels


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln]
        cpu = names[0] if names else cpu
    return f"{cpu}, single-threaded; {platform.system()} {platform.release()}"


def versions() -> str:
    pkgs = ("numpy", "scipy", "torch", "medpy", "monai", "edt", "opencv-python-headless")
    found = {p: (scipy.__version__ if p == "scipy" else version(p)) for p in pkgs}
    return f"Python {platform.python_version()}, " + ", ".join(f"{p} {v}" for p, v in found.items())


def render(
    items: list[dict],
    boundary_items: list[dict],
    biou: dict,
    evaluation: tuple[float, float, int],
    n_cases: int,
    quick: bool,
) -> str:
    today, everything, eval_voxels = evaluation
    lines = [
        "# Metric speed: bench.metrics vs medpy, MONAI and the official Boundary IoU",
        "",
        f"Generated by `scripts/bench_metrics.py{' --quick' if quick else ''}`. Machine: {machine()}. "
        "Times are CPU seconds of one thread (`time.process_time`; the machine may be shared: these "
        "numbers were taken while other jobs ran, so compare the ratios, measured side by side).",
        f"Versions: {versions()}.",
        "",
        "Synthetic data: Synapse-like CT volumes (8 ellipsoid organs, spacing "
        f"{SPACING} mm, prediction shifted 0–2 voxels, rescaled ±7 %, some 5×10×10-voxel false "
        "positives) and Cityscapes-like 1024×2048 Voronoi label maps of 19 classes (prediction: jittered "
        "boundaries plus 40 wrong-class disks; bottom band ignored). Ours: `hd95` (organs) or "
        '`score_case("cityscapes")` (image: DSC, IoU, pooled and directed HD95 of all 19 classes). '
        "medpy: `hd95` on the full arrays (one run). MONAI: `compute_hausdorff_distance(percentile=95)` "
        "on CPU tensors (best of 3; its value is the max of the directed percentiles, compared with "
        "ours). 'Agree' is the largest relative difference.",
        "",
        "## HD95",
        "",
        "| item | ours (CPU s) | medpy (CPU s) | MONAI (CPU s) | medpy / ours | MONAI / ours | agree |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for it in items:
        lines.append(
            f"| {it['item']} | {it['ours']:.4f} | {it['medpy']:.2f} | {it['monai']:.3f} | "
            f"{it['medpy'] / it['ours']:.0f}× | {it['monai'] / it['ours']:.1f}× | {it['agree']} |"
        )
    lines += [
        "",
        "## NSD and ASSD",
        "",
        f"NSD at τ = {TOLERANCE} mm: ours `measure_pair(...).nsd` vs MONAI `compute_surface_dice` (CPU, "
        "`use_subvoxels=False`, best of 3; values shown, relative difference in brackets). ASSD: ours "
        "`measure_pair(...).assd` vs medpy `assd` on the full arrays (one run). 'all three': HD95, NSD "
        "and ASSD of the organ from one surface extraction and one distance query.",
        "",
        "| item | NSD ours (CPU s) | MONAI (CPU s) | MONAI / ours | NSD ours vs MONAI | ASSD ours (CPU s) "
        "| medpy (CPU s) | medpy / ours | ASSD agree | all three (CPU s) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for it in boundary_items:
        lines.append(
            f"| {it['item']} | {it['nsd']:.4f} | {it['monai']:.3f} | {it['monai'] / it['nsd']:.1f}× | "
            f"{it['nsd_agree']} | {it['assd']:.4f} | {it['medpy']:.2f} | {it['medpy'] / it['assd']:.0f}× | "
            f"{it['assd_agree']} | {it['all']:.4f} |"
        )
    lines += [
        "",
        "## Boundary IoU",
        "",
        "Ours: `boundary_counts` (one min and one max filter per label map give every class's boundary "
        "region). Reference: the official `mask_to_boundary` transcribed per class with cv2 "
        "(d iterations of a 3×3 erosion of the zero-padded mask), best of 3 each.",
        "",
        "| item | ours (CPU s) | official per class (CPU s) | official / ours | agree |",
        "|---|---:|---:|---:|---|",
        f"| {biou['item']} | {biou['ours']:.3f} | {biou['ref']:.3f} | {biou['ref'] / biou['ours']:.1f}× | "
        f"{biou['agree']} |",
        "",
        "## Full synthetic Synapse evaluation",
        "",
        f"{n_cases} volumes (85–149 × 512 × 512, {eval_voxels / 1e6:.0f} M voxels in all) × 8 organs, "
        "spacing in mm, data generation not timed, both on the same volumes in the same run:",
        "",
        "| metrics per (case, organ) | CPU s | vs today |",
        "|---|---:|---:|",
        f"| today: DSC, IoU, pooled and directed HD95 | {today:.1f} | 1.00× |",
        f'| all: + NSD (τ = {TOLERANCE} mm) and ASSD, `score_case("default")` | {everything:.1f} | '
        f"{everything / today:.2f}× |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs; no file unless --out is given")
    parser.add_argument("--out", type=Path, help="Markdown output (default: results/perf/metrics.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", FutureWarning)  # MONAI deprecates one of its own arguments
    rng = np.random.default_rng(0)
    if args.quick:
        items = bench_synapse_organs(rng, 40, [2])
        items.append(bench_cityscapes(rng, (256, 512)))
        boundary_items = bench_boundary_organs(rng, 40, [2])
        biou = bench_boundary_iou(rng, (256, 512))
        n_cases = 2
    else:
        items = bench_synapse_organs(rng, 100, [5, 2])
        items.append(bench_cityscapes(rng, (1024, 2048)))
        boundary_items = bench_boundary_organs(rng, 100, [5, 2])
        biou = bench_boundary_iou(rng, (1024, 2048))
        n_cases = 12
    evaluation = bench_synapse_evaluation(rng, n_cases)
    text = render(items, boundary_items, biou, evaluation, n_cases, args.quick)
    print(text)
    out = args.out or (None if args.quick else Path("results/perf/metrics.md"))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
