"""One-shot GPU check: training speed, every loss against CE, loader vs GPU demand, evaluation, torchrun.

    python scripts/gpu_check.py                            # on a GPU: ≤ 8 min, writes results/perf/gpu.md
    python scripts/gpu_check.py --device cpu --quick --out /tmp/gpu.md      # tiny sizes, seconds (a test)

No network and no dataset: models are randomly initialised and the data is generated at the recipes'
real resolutions (Cityscapes trees in the official format are written to a temporary folder for the
loader). Sections of the report:

1. training steps/s and peak memory of the ``paper_synapse`` (U-Net R34, 224², batch 24, 9 classes)
   and ``paper_cityscapes`` (DeepLabV3+ R50, 512×1024, batch 8, 19 classes) settings, one
   ``bench.train.Trainer.train_step`` at a time (bf16 autocast + channels_last on CUDA), with and
   without ``torch.compile``;
2. every registered loss's step time relative to CE in both settings (no compile; the target maps a
   loss declares are given with the batch, as when they come from the loader workers);
3. loader samples/s of one worker (one process, one thread, PNG decode and augmentation included,
   with and without the target maps) against what the GPU consumes, and the ``num_workers`` that
   keeps up;
4. evaluation throughput on whole 2048×1024 images (``cityscapes`` protocol) and Synapse-like volumes
   (``default`` protocol), HD95 included;
5. a few DDP steps of a 1-process ``torchrun`` (NCCL on CUDA, gloo on CPU).

``--quick`` shrinks every size (tiny model, a few pixels, one or two steps) so that the script runs in
seconds on a CPU; it then needs an explicit ``--out`` and never writes ``results/perf/gpu.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the packages and the format writers

import losses  # noqa: E402
from bench.evaluate import evaluate  # noqa: E402
from bench.model import build_model, freeze_unused  # noqa: E402
from bench.train import Trainer  # noqa: E402
from datasets.base import SegDataset  # noqa: E402
from datasets.gt_maps import WithGTMaps  # noqa: E402
from losses.distance import _GPU_EDT, gt_maps  # noqa: E402

DEFAULT_OUT = REPO / "results" / "perf" / "gpu.md"

#: the recipes' settings (model, crop, batch, classes, input channels); --quick shrinks them
SETTINGS = {
    "paper_synapse": {"model": "unet_r34", "size": (224, 224), "batch": 24, "classes": 9, "channels": 1},
    "paper_cityscapes": {
        "model": "deeplabv3plus_r50",
        "size": (512, 1024),
        "batch": 8,
        "classes": 19,
        "channels": 3,
    },
}
QUICK = {
    "paper_synapse": {"model": "tiny", "size": (32, 32), "batch": 2},
    "paper_cityscapes": {"model": "tiny", "size": (32, 64), "batch": 2},
}


# --- helpers ------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def voronoi(rng: np.random.Generator, shape: tuple[int, ...], classes: int, regions: int = 24) -> np.ndarray:
    """Label map with ``regions`` Voronoi cells of random classes (plus 2 % ignored pixels)."""
    grids = np.meshgrid(*[np.linspace(0, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    seeds = rng.random((regions, len(shape))).astype(np.float32)
    best = np.full(shape, np.inf, dtype=np.float32)
    label = np.zeros(shape, dtype=np.int64)
    for k, cls in enumerate(rng.integers(0, classes, regions)):
        d = sum((g - s) ** 2 for g, s in zip(grids, seeds[k], strict=True))
        closer = d < best
        best[closer], label[closer] = d[closer], cls
    label[rng.random(shape) < 0.02] = 255
    return label


def make_model(setting: dict, loss: str = "ce") -> torch.nn.Module:
    info = losses.loss_info(loss)
    mcfg = yaml.safe_load((REPO / "conf" / "model" / f"{setting['model']}.yaml").read_text())
    return build_model(
        mcfg["arch"],
        mcfg["encoder_name"],
        None,  # random init: no network
        in_channels=setting["channels"],
        num_classes=setting["classes"],
        aux_channels=info.num_aux_channels(setting["classes"]),
        with_features="features" in info.inputs,
        kwargs=mcfg.get("kwargs"),
    )


def loss_hparams(name: str, tmp: Path, quick: bool) -> dict[str, Any]:
    """What a loss needs beyond its defaults: InverseForm a (random) InverseNet checkpoint."""
    if name != "inverseform":
        return {}
    from losses.inverseform import InverseNet

    path = tmp / "inversenet.pt"
    if not path.exists():
        torch.save((InverseNet(patch=8, hidden=(16,)) if quick else InverseNet()).checkpoint(), path)
    return {"checkpoint": str(path)}


def make_batch(setting: dict, device: torch.device, maps: tuple[str, ...], seed: int = 0) -> dict[str, Any]:
    """A training batch on the device (pinned copy), with the target maps ``maps`` as from the loader."""
    rng = np.random.default_rng(seed)
    b, (h, w), c = setting["batch"], setting["size"], setting["classes"]
    label = torch.from_numpy(np.stack([voronoi(rng, (h, w), c) for _ in range(b)]))
    batch = {"image": torch.randn(b, setting["channels"], h, w), "label": label}
    batch.update(gt_maps(label, maps, c))
    pin = device.type == "cuda"
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in batch.items()}


def trainer_for(setting, model, loss_fn, loss, device, compile_, tmp: Path) -> Trainer:
    info = losses.loss_info(loss)
    cfg = {
        "max_steps": 10**6,
        "batch_size": setting["batch"],
        "optimizer": {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4},
        "scheduler": {"name": "poly", "power": 0.9},
        "amp": True,  # bf16 on CUDA (the Trainer enables it only there)
        "channels_last": True,
        "compile": compile_,
        "progress_bar": False,
    }
    return Trainer(
        cfg,
        model=model,
        loss_fn=loss_fn,
        loss_name=loss,
        loss_inputs=info.inputs,
        loss_maps=info.gt_maps(),
        train_set=[],
        device=device,
        seed=0,
        ckpt_dir=tmp / "ckpt",
    )


def time_steps(trainer: Trainer, batch: dict, warmup: int, steps: int, cap_s: float) -> tuple[float, int]:
    """Seconds per training step (after ``warmup`` steps), stopping early after ``cap_s``; and the steps."""
    for _ in range(warmup):
        trainer.train_step(batch)
    sync(trainer.device)
    t0, done = time.perf_counter(), 0
    while done < steps and (done == 0 or time.perf_counter() - t0 < cap_s):
        trainer.train_step(batch)
        done += 1
    sync(trainer.device)
    return (time.perf_counter() - t0) / done, done


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(v) for v in r) + " |" for r in rows)]) + "\n"


# --- 1. training settings --------------------------------------------------------------------------------
def check_training(settings, device, quick, tmp) -> list[dict[str, Any]]:
    rows = []
    for name, setting in settings.items():
        for compile_ in (False, True):
            if compile_ and quick:
                rows.append({"setting": name, "compile": True, "skipped": "--quick"})
                continue
            torch.manual_seed(0)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            model = make_model(setting)
            loss_fn = losses.create_loss("ce", num_classes=setting["classes"])
            trainer = trainer_for(setting, model, loss_fn, "ce", device, compile_, tmp)
            batch = make_batch(setting, device, ())
            t0 = time.perf_counter()
            warm = 1 if quick else (4 if compile_ else 3)
            sec, n = time_steps(trainer, batch, warm, 2 if quick else 20, 10 if quick else 30)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            rows.append(
                {
                    "setting": name,
                    "compile": compile_,
                    "steps_per_s": 1 / sec,
                    "samples_per_s": setting["batch"] / sec,
                    "peak_gib": peak,
                    "steps": n,
                    "wall_s": time.perf_counter() - t0,
                }
            )
            print(f"[train] {rows[-1]}", flush=True)
            del trainer, model, batch
    return rows


# --- 2. every loss against CE ----------------------------------------------------------------------------
def check_losses(settings, device, quick, tmp, only: list[str] | None) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    names = only or losses.list_losses()
    for sname, setting in settings.items():
        out[sname] = {}
        models: dict[tuple, torch.nn.Module] = {}
        for loss in ["ce", *[n for n in names if n != "ce"]]:
            info = losses.loss_info(loss)
            key = (info.num_aux_channels(setting["classes"]), "features" in info.inputs)
            if key not in models:  # one model per head layout; weights barely matter for timing
                torch.manual_seed(0)
                models[key] = make_model(setting, loss)
            try:
                loss_fn = losses.create_loss(
                    loss, num_classes=setting["classes"], **loss_hparams(loss, tmp, quick)
                )
                trainer = trainer_for(setting, models[key], loss_fn, loss, device, False, tmp)
                batch = make_batch(setting, device, info.gt_maps())
                sec, n = time_steps(trainer, batch, 1, 2 if quick else 5, 5 if quick else 12)
                out[sname][loss] = {"ms": 1000 * sec, "steps": n}
            except Exception as e:  # a loss that fails here is reported, not hidden
                out[sname][loss] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:200]}
            print(f"[loss] {sname} {loss} {out[sname][loss]}", flush=True)
        ce = out[sname]["ce"].get("ms")
        for row in out[sname].values():
            if "ms" in row and ce:
                row["vs_ce"] = row["ms"] / ce
    return out


# --- 3. loader against the GPU's demand ------------------------------------------------------------------
def check_loader(quick: bool, tmp: Path) -> list[dict[str, Any]]:
    """Samples/s of one worker (one process, one thread) for the Cityscapes and Synapse pipelines."""
    import cv2
    from fixtures_formats import write_cityscapes

    import datasets

    cv2.setNumThreads(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        size = (64, 128) if quick else (1024, 2048)
        crop = (32, 64) if quick else (512, 1024)
        cases = [f"aachen_{i:06d}_000019" for i in range(2 if quick else 6)]
        write_cityscapes(tmp / "cityscapes", "train", cases, size=size, cell=8 if quick else 64)
        street = datasets.create_dataset("cityscapes", root=tmp / "cityscapes", split="train", crop_size=crop)
        n = 2 if quick else 8
        depth, syn = (2, 32) if quick else (8, 512)
        gen = {"train_cases": 1, "test_cases": 1, "depth": depth, "size": syn, "seed": 0}
        synapse = datasets.create_dataset(
            "synthetic", root=tmp / "synthetic", split="train", img_size=32 if quick else 224, generator=gen
        )
        rows = []
        for setting, ds in (("paper_cityscapes", street), ("paper_synapse", synapse)):
            for maps in ((), ("label_distance",), ("signed_distance",)):
                wrapped = WithGTMaps(ds, maps) if maps else ds
                wrapped[0]  # first read (file cache, lazy handles)
                t0 = time.perf_counter()
                for i in range(1, n + 1):
                    wrapped[i]
                rate = n / (time.perf_counter() - t0)
                rows.append({"setting": setting, "maps": ", ".join(maps) or "none", "samples_per_s": rate})
                print(f"[loader] {rows[-1]}", flush=True)
        return rows
    finally:
        torch.set_num_threads(threads)


# --- 4. evaluation ------------------------------------------------------------------------------------------
class Generated(SegDataset):
    """Evaluation items generated in memory: whole street images or the slices of CT-like volumes."""

    def __init__(self, kind: str, cases: int, shape: tuple[int, ...], classes: int, image_size, channels):
        """``shape``: of a label (image) or volume; ``image_size``: (H, W) of the model's input."""
        super().__init__("test")
        self.kind, self.shape, self.image_size, self.channels = kind, shape, image_size, channels
        self.class_names = tuple(f"c{i}" for i in range(classes))
        self.volumetric = kind == "volume"
        self.units = "mm" if self.volumetric else "px"
        depth = shape[0] if self.volumetric else 1
        rng = np.random.default_rng(1)
        self.labels = [voronoi(rng, shape, classes, regions=16) for _ in range(cases)]
        self.items = [(c, z) for c in range(cases) for z in range(depth)]

    def __len__(self) -> int:
        return len(self.items)

    def case_of(self, idx: int) -> str:
        return f"case{self.items[idx][0]}"

    def spacing(self, case: str):
        return (3.0, 0.8, 0.8) if self.volumetric else None

    def load(self, idx: int) -> dict[str, Any]:
        c, z = self.items[idx]
        label = self.labels[c][z] if self.volumetric else self.labels[c]
        label = np.where(label == 255, 0, label) if self.volumetric else label
        image = np.random.default_rng(idx).standard_normal(
            (self.channels, *self.image_size), dtype=np.float32
        )
        return {"image": image, "label": label, "case": self.case_of(idx), "index": z}


def check_evaluation(settings, device, quick: bool) -> list[dict[str, Any]]:
    rows = []
    street = settings["paper_cityscapes"]
    volume = settings["paper_synapse"]
    sets = [
        (
            "whole Cityscapes images",
            street,
            Generated("image", 2 if quick else 8, big := (64, 128) if quick else (1024, 2048), 19, big, 3),
            "cityscapes",
            2,
        ),
        (
            "Synapse volumes",
            volume,
            Generated(
                "volume", 1 if quick else 2, (3, 32, 32) if quick else (40, 512, 512), 9, volume["size"], 1
            ),
            "default",
            volume["batch"],
        ),
    ]
    for what, setting, ds, protocol, batch in sets:
        torch.manual_seed(0)
        model = make_model(setting).to(device, memory_format=torch.channels_last)
        for workers in (0,) if quick else (0, "auto"):  # "auto": HD95 in a process pool
            kwargs = dict(protocols=[protocol], eval_classes=None, device=device, batch_size=batch)
            t0 = time.perf_counter()
            metrics = evaluate(model, ds, workers=workers, **kwargs)[0]
            sec = time.perf_counter() - t0
            cases = len(ds.labels)
            rows.append(
                {
                    "what": what,
                    "protocol": protocol,
                    "eval_workers": workers,
                    "cases": cases,
                    "cases_per_s": cases / sec,
                    "hd95": metrics["mean"]["hd95"],
                }
            )
            print(f"[eval] {rows[-1]}", flush=True)
    return rows


# --- 5. torchrun -----------------------------------------------------------------------------------------
def ddp_worker(args) -> None:
    """Run under torchrun: a few DDP steps (SyncBatchNorm on CUDA) with the Synapse setting."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(args.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    try:
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        setting = {**SETTINGS["paper_synapse"], **(QUICK["paper_synapse"] if args.quick else {})}
        torch.manual_seed(0)
        model = make_model(setting)
        freeze_unused(model, setting["channels"])  # as the runner: DDP wants every parameter used
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device, memory_format=torch.channels_last)
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.SGD(ddp.parameters(), lr=1e-3, momentum=0.9)
        batch = make_batch(setting, device, ())
        x = batch["image"].contiguous(memory_format=torch.channels_last)
        times = []
        for _ in range(2 if args.quick else 8):
            sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(ddp(x)["logits"].float(), batch["label"], ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total = loss.detach().clone()
            dist.all_reduce(total)
            sync(device)
            times.append(time.perf_counter() - t0)
        later = times[1:] or times
        if rank == 0:
            result = {
                "backend": backend,
                "world": dist.get_world_size(),
                "steps": len(times),
                "steps_per_s": len(later) / sum(later),
                "loss": float(total),
            }
            print("DDP_RESULT " + json.dumps(result), flush=True)
    finally:
        dist.destroy_process_group()


def check_torchrun(device: torch.device, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += [str(Path(__file__).resolve()), "--ddp-worker", "--device", device.type, *(["--quick"] * quick)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("DDP_RESULT ")]
    if proc.returncode != 0 or not lines:
        lines = (proc.stderr + proc.stdout).strip().splitlines()
        errors = [ln for ln in lines if "Error" in ln and "ChildFailedError" not in ln] or lines
        return {"error": f"torchrun exited {proc.returncode}: {errors[-1].strip()[:300]}"}
    return {**json.loads(lines[-1][len("DDP_RESULT ") :]), "wall_s": time.perf_counter() - t0}


# --- report ----------------------------------------------------------------------------------------------
def fmt(v: Any, digits: int = 2) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def report(res: dict[str, Any], args) -> str:
    env = res["env"]
    out = [
        "# GPU check (`scripts/gpu_check.py`)\n",
        f"`python scripts/gpu_check.py {' '.join(sys.argv[1:] if args.argv is None else args.argv)}` "
        f"on {env['date']}: {env['device_name']}, torch {env['torch']} (CUDA {env['cuda']}), GPU EDT: "
        f"{env['gpu_edt']}, {env['cpus']} CPUs; {env['wall_s']:.0f} s in all."
        + (" **--quick: tiny sizes, not a measurement.**" if args.quick else "")
        + "\n",
        "## Training (CE, bf16 autocast + channels_last on CUDA)\n",
        table(
            ["setting", "model, crop, batch", "torch.compile", "steps/s", "samples/s", "peak memory (GiB)"],
            [
                [
                    r["setting"],
                    "{model}, {size[0]}×{size[1]}, {batch}".format(**res["settings"][r["setting"]]),
                    "yes" if r["compile"] else "no",
                    *(
                        [f"skipped ({r['skipped']})", "", ""]
                        if "skipped" in r
                        else [fmt(r["steps_per_s"]), fmt(r["samples_per_s"], 1), fmt(r["peak_gib"])]
                    ),
                ]
                for r in res["training"]
            ],
        ),
        "## Every loss against CE (no compile; target maps given with the batch, as from the loader)\n",
    ]
    settings = list(res["losses"])
    names = list(res["losses"][settings[0]])
    rows = []
    for name in names:
        row = [f"`{name}`", ", ".join(losses.loss_info(name).gt_maps()) or "–"]
        for s in settings:
            r = res["losses"][s][name]
            row += [r["error"], ""] if "error" in r else [fmt(r["ms"], 1), f"{r['vs_ce']:.2f}×"]
        rows.append(row)
    out.append(table(["loss", "maps", *[f"{s} {k}" for s in settings for k in ("ms/step", "÷ CE")]], rows))
    out.append("## Loader: samples/s of one worker against the GPU's demand\n")
    demand = {
        r["setting"]: r["samples_per_s"] for r in res["training"] if not r["compile"] and "samples_per_s" in r
    }
    out.append(
        table(
            [
                "setting",
                "target maps",
                "samples/s per worker",
                "GPU demand (samples/s, no compile)",
                "workers",
            ],
            [
                [
                    r["setting"],
                    r["maps"],
                    fmt(r["samples_per_s"], 1),
                    fmt(demand.get(r["setting"], float("nan")), 1),
                    math.ceil(demand[r["setting"]] / r["samples_per_s"]) if r["setting"] in demand else "–",
                ]
                for r in res["loader"]
            ],
        )
    )
    out.append("## Evaluation (untrained model: many small components, HD95's worst case)\n")
    out.append(
        table(
            ["data", "protocol", "eval_workers", "cases", "cases/s", "mean HD95"],
            [
                [
                    r["what"],
                    r["protocol"],
                    r["eval_workers"],
                    r["cases"],
                    fmt(r["cases_per_s"]),
                    fmt(r["hd95"], 1),
                ]
                for r in res["evaluation"]
            ],
        )
    )
    t = res["torchrun"]
    out.append("## torchrun (1 process, DDP)\n")
    out.append(
        f"Failed: {t['error']}\n"
        if "error" in t
        else f"backend {t['backend']}, world {t['world']}, {t['steps']} steps, {fmt(t['steps_per_s'])} "
        f"steps/s (after the first), launch to exit {t['wall_s']:.0f} s.\n"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds on a CPU); needs --out")
    ap.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_OUT.relative_to(REPO)}")
    ap.add_argument("--losses", nargs="+", default=None, help="only these losses (default: all)")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = argv
    device = torch.device(args.device)
    if args.ddp_worker:
        ddp_worker(args)
        return {}
    if args.quick and args.out is None:
        ap.error("--quick needs --out PATH (it never writes results/perf/gpu.md)")
    out = args.out or DEFAULT_OUT
    if args.quick and out.resolve() == DEFAULT_OUT.resolve():
        ap.error(f"--quick does not overwrite {DEFAULT_OUT.relative_to(REPO)}: pass another --out")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available (use --device cpu --quick to test the script)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = {k: {**v, **(QUICK[k] if args.quick else {})} for k, v in SETTINGS.items()}
    t0 = time.perf_counter()
    res: dict[str, Any] = {"settings": settings}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        steps: dict[str, Callable[[], Any]] = {
            "training": lambda: check_training(settings, device, args.quick, tmp),
            "losses": lambda: check_losses(settings, device, args.quick, tmp, args.losses),
            "loader": lambda: check_loader(args.quick, tmp),
            "evaluation": lambda: check_evaluation(settings, device, args.quick),
            "torchrun": lambda: check_torchrun(device, args.quick),
        }
        for name, step in steps.items():
            res[name] = step()
    res["env"] = {
        "date": str(datetime.date.today()),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "CPU",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu_edt": "cupy/cuCIM" if _GPU_EDT is not None else "none (CUDA maps go through the CPU)",
        "cpus": os.cpu_count(),
        "wall_s": time.perf_counter() - t0,
    }
    text = report(res, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return res


if __name__ == "__main__":
    main()
