"""Harness overhead: our ``Trainer`` vs a bare PyTorch loop, same model, data, batch, optimiser, loss.

    python scripts/bench_train.py                       # CPU: tiny U-Net on 64 px synthetic slices
    python scripts/bench_train.py --device cuda --model unet_r34 --size 224 --batch 24 --steps 200

Both loops run the same number of steps, alternating (ours, bare, ours, bare, ...) ``--repeats``
times after a warm-up; the median steps/s of each and the overhead ratio go to
``results/perf/train.md``. Our loop adds only AMP/channels_last handling identical to the bare
loop's, an on-device NaN flag and loss sum, and one host sync per ``log_every`` steps.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

import losses
from bench.model import build_model
from bench.train import DrawSampler, Trainer
from datasets.synthetic import synthetic

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="tiny", help="a conf/model/<name>.yaml (weights are not loaded)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "perf" / "train.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    mcfg = yaml.safe_load((ROOT / "conf" / "model" / f"{args.model}.yaml").read_text())
    tmp = Path(tempfile.mkdtemp())
    gen = {"train_cases": 2, "test_cases": 1, "depth": 16, "size": args.size, "seed": 0}
    dataset = synthetic(tmp / "data", "train", img_size=args.size, generator=gen, seed=1)

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
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    cmd = " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out")
    table = (
        "# Training-loop overhead: `bench.train.Trainer` vs a bare PyTorch loop\n\n"
        f"Generated by `python scripts/bench_train.py {cmd}` "
        f"on {datetime.date.today()}, torch {torch.__version__}, {name}.\n"
        f"Same model ({args.model}, random init), data (synthetic {args.size}px), batch {args.batch}, "
        "AdamW + poly, "
        f"loss `ce`, AMP={'bf16' if amp else 'off'}, channels_last; {args.steps} steps per run, "
        f"median of {args.repeats} alternating runs after warm-up.\n\n"
        "| loop | steps/s (median) | all runs |\n|---|---|---|\n"
        f"| ours (`Trainer.fit`) | {o:.2f} | {', '.join(f'{v:.2f}' for v in ours)} |\n"
        f"| bare PyTorch | {b:.2f} | {', '.join(f'{v:.2f}' for v in bare)} |\n\n"
        f"**Overhead of ours: {overhead * 100:+.1f}%** (bare/ours − 1; the goal is ≤ 3%).\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
