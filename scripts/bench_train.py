"""Training speed: the harness's overhead, and the distance-map losses against CE.

    python scripts/bench_train.py                       # CPU: tiny U-Net on 64 px synthetic slices
    python scripts/bench_train.py --device cuda --model unet_r34 --size 224 --batch 24 --steps 200
    python scripts/bench_train.py --loss boundary dmce boundary_aware region_wise --workers 2

Without ``--loss``: our ``Trainer`` vs a bare PyTorch loop, same model, data, batch, optimiser and
loss (CE). Both loops run the same number of steps, alternating (ours, bare, ours, bare, ...)
``--repeats`` times after a warm-up; the median steps/s of each and the overhead ratio. Our loop adds
only AMP/channels_last handling identical to the bare loop's, an on-device NaN flag and loss sum, and
one host sync per ``log_every`` steps.

With ``--loss NAME ...``: a ``Trainer`` step with each loss against CE on the same model (plus the
loss's aux head, if any) and data, with ``--workers`` loader workers; a loss's target maps are made
in the workers (as in a run), and, for comparison, inside the loss (``maps in the loss``). Runs
alternate (CE, loss with loader maps, loss computing its maps) ``--repeats`` times; each run's
steps/s is measured after its first ``log_every`` interval (worker start-up and prefetch excluded).

Each mode rewrites its own section of ``results/perf/train.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

import losses
from bench.model import build_model
from bench.train import DrawSampler, Trainer
from datasets.synthetic import SyntheticDataset

ROOT = Path(__file__).resolve().parent.parent


def bare_loop(model, loss_fn, dataset, device, steps, batch, amp, channels_last, lr) -> float:
    """The reference: a plain PyTorch training loop; returns steps/s."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / steps) ** 0.9)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=DrawSampler(len(dataset), seed=1),
        drop_last=True,
        pin_memory=device.type == "cuda",
    )
    it = iter(loader)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        x = b["image"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = b["label"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x)["logits"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync(device)
    return steps / (time.perf_counter() - t0)


def our_loop(model, loss_fn, dataset, device, steps, batch, amp, channels_last, lr, ckpt_dir) -> float:
    cfg = {
        "max_steps": steps,
        "batch_size": batch,
        "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 1e-4},
        "scheduler": {"name": "poly", "power": 0.9},
        "amp": amp,
        "channels_last": channels_last,
        "log_every": 20,
        "ckpt_every": 0,
        "progress_bar": False,
    }
    trainer = Trainer(
        cfg,
        model=model,
        loss_fn=loss_fn,
        loss_name="ce",
        loss_inputs=(),
        train_set=dataset,
        device=device,
        seed=1,
        ckpt_dir=ckpt_dir,
    )
    trainer.save = lambda name="last.pt": None  # time the loop, not the final checkpoint write
    sync(device)
    t0 = time.perf_counter()
    trainer.fit()
    sync(device)
    return steps / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_run(
    model, loss_fn, name, maps, dataset, device, steps, batch, amp, workers, ckpt_dir, log_every
) -> float:
    """Steady-state steps/s of ``Trainer.fit`` after its first ``log_every`` steps."""
    info = losses.loss_info(name)
    cfg = {
        "max_steps": steps,
        "batch_size": batch,
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
        "scheduler": {"name": "poly", "power": 0.9},
        "amp": amp,
        "channels_last": True,
        "log_every": log_every,
        "ckpt_every": 0,
        "progress_bar": False,
    }
    rates: list[float] = []
    trainer = Trainer(
        cfg,
        model=model,
        loss_fn=loss_fn,
        loss_name=name,
        loss_inputs=info.inputs,
        loss_maps=maps,
        train_set=dataset,
        device=device,
        seed=1,
        ckpt_dir=ckpt_dir,
        num_workers=workers,
        log=lambda values, step: rates.append(values["train/steps_per_s"]),
    )
    trainer.save = lambda name="last.pt": None
    trainer.fit()
    later = rates[1:] or rates
    return len(later) / sum(1 / r for r in later)  # steps over time of the intervals after the first


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of ``path``, keeping the others."""
    head = "# Training speed (`scripts/bench_train.py`)\n"
    text = path.read_text() if path.exists() else head
    if not text.startswith(head):
        text = head
    parts = text.split("\n## ")
    kept = [p for p in parts[1:] if not p.startswith(title + "\n")]
    sections = {p.split("\n", 1)[0]: p for p in [*kept, f"{title}\n\n{body.strip()}\n"]}
    order = ["Loop overhead", "Distance-map losses vs CE"]
    ordered = sorted(sections, key=lambda t: order.index(t) if t in order else len(order))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(parts[0].rstrip("\n") + "\n\n" + "\n".join(f"## {sections[t]}" for t in ordered))


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def versus_ce(args, device, dataset, mcfg, tmp: Path) -> str:
    """The section comparing each ``--loss`` with CE."""
    amp = device.type == "cuda"

    def fresh(name: str, hparams: dict | None = None):
        info = losses.loss_info(name)
        torch.manual_seed(0)
        model = build_model(
            mcfg["arch"],
            mcfg["encoder_name"],
            None,
            in_channels=1,
            num_classes=9,
            aux_channels=info.num_aux_channels(9),
            with_features="features" in info.inputs,
            kwargs=mcfg.get("kwargs"),
        )
        return model, losses.create_loss(name, num_classes=9, **(hparams or {}))

    common = dict(
        dataset=dataset,
        device=device,
        steps=args.steps,
        batch=args.batch,
        amp=amp,
        workers=args.workers,
        ckpt_dir=tmp / "ck",
        log_every=max(1, args.steps // 4),
    )
    timed_run(*fresh("ce"), "ce", (), **{**common, "steps": 8, "log_every": 4})  # warm-up
    rows = []
    for name in args.loss:
        maps = losses.loss_info(name).gt_maps()
        ce, loader, inside = [], [], []
        for _ in range(args.repeats):
            ce.append(timed_run(*fresh("ce"), "ce", (), **common))
            loader.append(timed_run(*fresh(name), name, maps, **common))
            inside.append(timed_run(*fresh(name), name, (), **common))
        c, m, i = (statistics.median(v) for v in (ce, loader, inside))
        rows.append(
            f"| `{name}` | {', '.join(maps) or '–'} | {c:.2f} | {m:.2f} | {i:.2f} | "
            f"**{c / m:.2f}×** | {c / i:.2f}× |"
        )
        print(rows[-1], flush=True)
    cmd = " ".join(
        f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if k != "out"
    )
    return (
        f"Generated by `python scripts/bench_train.py {cmd}` on {datetime.date.today()}, torch "
        f"{torch.__version__}, {machine(device)}. Model {args.model} (random init, plus the loss's "
        f"aux head), synthetic {args.size}px slices (9 classes), batch {args.batch}, AdamW + poly, "
        f"AMP={'bf16' if amp else 'off'}, channels_last, {args.workers} loader workers; {args.steps} "
        f"steps per run, steady-state steps/s (after the first {common['log_every']} steps), median "
        f"of {args.repeats} alternating runs. *Maps from the loader*: the target maps the loss declares "
        "are made in the workers (as in a run); *maps in the loss*: the loss computes them in the "
        "step (before this change). Step time relative to CE = CE steps/s ÷ loss steps/s; the "
        "target is ≤ 1.3× with the maps from the loader.\n\n"
        "| loss | maps | CE steps/s | steps/s, maps from the loader | steps/s, maps in the loss | "
        "step time ÷ CE (loader maps) | step time ÷ CE (maps in the loss) |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="tiny", help="a conf/model/<name>.yaml (weights are not loaded)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loss", nargs="+", default=None, help="compare these losses with CE")
    ap.add_argument("--workers", type=int, default=2, help="loader workers (with --loss)")
    ap.add_argument("--note", default="", help="a sentence on the machine's load, added to the section")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "perf" / "train.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    mcfg = yaml.safe_load((ROOT / "conf" / "model" / f"{args.model}.yaml").read_text())
    tmp = Path(tempfile.mkdtemp())
    gen = {"train_cases": 2, "test_cases": 1, "depth": 16, "size": args.size, "seed": 0}
    dataset = SyntheticDataset(tmp / "data", "train", img_size=args.size, generator=gen, seed=1)
    if args.loss:
        for name in args.loss:
            losses.loss_info(name)  # unknown names fail before any timing
        body = versus_ce(args, device, dataset, mcfg, tmp)
        write_section(args.out, "Distance-map losses vs CE", body + (f"\n{args.note}\n" if args.note else ""))
        print(body)
        return

    def fresh():
        torch.manual_seed(0)
        model = build_model(
            mcfg["arch"], mcfg["encoder_name"], None, in_channels=1, num_classes=9, kwargs=mcfg.get("kwargs")
        ).to(device, memory_format=torch.channels_last)
        return model, losses.create_loss("ce", num_classes=9).to(device)

    common = dict(
        dataset=dataset,
        device=device,
        steps=args.steps,
        batch=args.batch,
        amp=amp,
        channels_last=True,
        lr=1e-3,
    )
    our_loop(*fresh(), ckpt_dir=tmp / "ck", **{**common, "steps": 10})  # warm-up (allocator, kernels)
    bare_loop(*fresh(), **{**common, "steps": 10})
    ours, bare = [], []
    for _ in range(args.repeats):
        ours.append(our_loop(*fresh(), ckpt_dir=tmp / "ck", **common))
        bare.append(bare_loop(*fresh(), **common))
    o, b = statistics.median(ours), statistics.median(bare)
    overhead = b / o - 1
    cmd = " ".join(
        f"--{k} {v}"
        for k, v in vars(args).items()
        if k in ("device", "model", "size", "batch", "steps", "repeats")
    )
    body = (
        "`bench.train.Trainer` vs a bare PyTorch loop. "
        f"Generated by `python scripts/bench_train.py {cmd}` "
        f"on {datetime.date.today()}, torch {torch.__version__}, {machine(device)}.\n"
        f"Same model ({args.model}, random init), data (synthetic {args.size}px), batch {args.batch}, "
        "AdamW + poly, "
        f"loss `ce`, AMP={'bf16' if amp else 'off'}, channels_last; {args.steps} steps per run, "
        f"median of {args.repeats} alternating runs after warm-up.\n\n"
        "| loop | steps/s (median) | all runs |\n|---|---|---|\n"
        f"| ours (`Trainer.fit`) | {o:.2f} | {', '.join(f'{v:.2f}' for v in ours)} |\n"
        f"| bare PyTorch | {b:.2f} | {', '.join(f'{v:.2f}' for v in bare)} |\n\n"
        f"**Overhead of ours: {overhead * 100:+.1f}%** (bare/ours − 1; the goal is ≤ 3%).\n"
    )
    write_section(args.out, "Loop overhead", body + (f"\n{args.note}\n" if args.note else ""))
    print(body)


if __name__ == "__main__":
    main()
