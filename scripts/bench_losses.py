"""Forward + backward time of every registered loss relative to ``ce`` on the same logits.

Each loss is built from its ``conf/loss/<name>.yaml`` params (as the runner builds it) and called on
the same random logits, blocky target (5 % ignored) and, where it declares them, runtime inputs:
``aux`` ``[B, aux_channels, H, W]``, ``features`` ``[B, 16, H, W]`` (an SMP U-Net decoder's output),
``progress`` 0.5. Reported: the median of 3 to ``--repeats`` timed calls (stopping once ``--budget``
seconds are spent) after ``--warmup`` calls, the median of its ratios to a ``ce`` call timed right
before each (paired, so that a drift of the machine's speed cancels), and on CUDA the peak memory the
call allocates beyond its inputs. On CPU the timer is the process CPU time of one thread (steadier
than wall time on a shared machine); on CUDA it is wall time between synchronisations. Losses that
cannot be built (e.g. a missing checkpoint) are listed with the reason.

    .venv/bin/python scripts/bench_losses.py     # CPU, 8×19×128×256; writes results/perf/losses.md
    .venv/bin/python scripts/bench_losses.py --device cuda --height 512 --width 1024
    .venv/bin/python scripts/bench_losses.py --losses 'dice*' --out -   # print only
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from omegaconf import OmegaConf

from losses import create_loss, list_losses, loss_info

ROOT = Path(__file__).resolve().parents[1]
FEATURES = 16


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7, help="at most this many timed calls (at least 3)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds per loss after which timing stops")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--losses", default="*", help="glob over registered loss names (ce always runs)")
    p.add_argument("--out", default=str(ROOT / "results" / "perf" / "losses.md"), help="Markdown file, or - ")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here; use --device cpu")
    for field in ("batch", "classes", "height", "width"):
        if getattr(args, field) < 1:
            p.error(f"--{field} must be >= 1, got {getattr(args, field)}")
    if args.repeats < 3:
        p.error(f"--repeats must be >= 3 (a median of at least 3 calls), got {args.repeats}")
    return args


def make_batch(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and a target of 8×8-pixel blocks of random classes, 5 % of the pixels ignored."""
    g = torch.Generator().manual_seed(0)
    b, c, h, w = args.batch, args.classes, args.height, args.width
    logits = torch.randn(b, c, h, w, generator=g)
    blocks = torch.randint(0, c, (b, -(-h // 8), -(-w // 8)), generator=g)
    target = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :h, :w].contiguous()
    target[torch.rand(b, h, w, generator=g) < 0.05] = 255
    return logits.to(device), target.to(device)


def runtime_inputs(name: str, logits: torch.Tensor) -> dict:
    b, c, h, w = logits.shape
    info, out = loss_info(name), {}
    if "aux" in info.inputs:
        out["aux"] = torch.randn(b, info.num_aux_channels(c), h, w, device=logits.device, requires_grad=True)
    if "features" in info.inputs:
        out["features"] = torch.randn(b, FEATURES, h, w, device=logits.device, requires_grad=True)
    if "progress" in info.inputs:
        out["progress"] = 0.5
    return out


def config_params(name: str) -> dict:
    """The ``params`` of ``conf/loss/<name>.yaml`` (``{}`` without one)."""
    path = ROOT / "conf" / "loss" / f"{name}.yaml"
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path)).get("params") or {}


def stepper(name: str, args: argparse.Namespace, logits: torch.Tensor, target: torch.Tensor):
    """One forward + backward of loss ``name`` (built from its config) as a function, or the reason
    it cannot be built."""
    try:
        loss = create_loss(name, num_classes=args.classes, **config_params(name)).to(logits.device)
    except (ValueError, FileNotFoundError) as err:
        return str(err)
    leaf = logits.detach().requires_grad_()
    inputs = runtime_inputs(name, leaf)

    def step() -> None:
        loss(leaf, target, **inputs).backward()
        leaf.grad = None
        for v in inputs.values():
            if isinstance(v, torch.Tensor):
                v.grad = None

    return step


def timed(step, cuda: bool) -> float:
    """Milliseconds of one ``step()``: wall time between CUDA synchronisations, or process CPU time."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter() if cuda else time.process_time()
    step()
    if cuda:
        torch.cuda.synchronize()
    return ((time.perf_counter() if cuda else time.process_time()) - start) * 1e3


def measure(step, ce_step, args: argparse.Namespace, cuda: bool) -> dict:
    """Median ms of ``step`` and the median of its ratios to ``ce_step`` timed right before it, call
    by call (a paired ratio is steadier than two medians taken apart when the machine's speed drifts);
    on CUDA the peak MiB one ``step`` allocates beyond what is allocated before it."""
    for _ in range(args.warmup):
        ce_step()
        step()
    times, ratios = [], []
    while len(times) < args.repeats and (len(times) < 3 or sum(times) < args.budget * 1e3):
        ce = timed(ce_step, cuda)
        times.append(timed(step, cuda))
        ratios.append(times[-1] / ce)
    out = {"ms": statistics.median(times), "vs_ce": statistics.median(ratios)}
    if cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        out["mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


def table(rows: dict[str, dict], args: argparse.Namespace, device: torch.device) -> str:
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    lines = [
        "# Loss cost: forward + backward, relative to cross-entropy",
        "",
        f"- device: {name}",
        f"- logits: {args.batch}×{args.classes}×{args.height}×{args.width} float32; "
        "target: 8×8 blocks of random classes, 5 % ignored",
        f"- median of 3–{args.repeats} calls ({args.budget:g} s budget per loss) "
        f"after {args.warmup} warm-up; "
        + ("wall time between CUDA synchronisations" if cuda else "process CPU time")
        + "; × CE: the median ratio to a CE call timed right before each call",
        f"- torch {torch.__version__}, {date.today().isoformat()}; `scripts/bench_losses.py`",
        "",
        "| loss | category | ms | × CE |" + (" peak MiB |" if cuda else ""),
        "|---|---|---:|---:|" + ("---:|" if cuda else ""),
    ]
    skipped = []
    for loss, r in rows.items():
        if "error" in r:
            skipped.append(f"- `{loss}`: {r['error']}")
            continue
        mem = f" {r['mib']:.0f} |" if cuda else ""
        lines.append(f"| {loss} | {loss_info(loss).category} | {r['ms']:.1f} | {r['vs_ce']:.2f} |{mem}")
    if skipped:
        lines += ["", "Not measured (cannot be built with their config here):", "", *skipped]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    logits, target = make_batch(args, device)
    names = ["ce", *(n for n in list_losses(args.losses) if n != "ce")]
    cuda = device.type == "cuda"
    ce_step = stepper("ce", args, logits, target)
    rows = {}
    for name in names:
        step = stepper(name, args, logits, target)
        rows[name] = {"error": step} if isinstance(step, str) else measure(step, ce_step, args, cuda)
        r = rows[name]
        done = f"{r['ms']:9.1f} ms {r['vs_ce']:6.2f} × CE" if "ms" in r else f"skipped: {r['error']}"
        print(f"{name:24s} {done}", flush=True)
    text = table(rows, args, device)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
