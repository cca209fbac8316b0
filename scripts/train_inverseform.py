"""Train the InverseNet of the InverseForm loss (Borse et al., CVPR 2021) and save a checkpoint.

    python scripts/train_inverseform.py --out checkpoints/inversenet.pt [--device cuda] [--steps 20000]
    python scripts/train_inverseform.py --out ... --labels 'data/cityscapes/gtFine/train/*/*labelTrainIds.png'

The authors' pretrained regressor (``distance_measures_regressor.pth``) cannot be downloaded here, so
this follows the paper's recipe: an edge map and a copy warped by a random affine θ near the
identity are fed as (predicted, target) patches, and the network regresses ``θ − I`` (MSE; a
patch without edges is paired with the identity). Edge maps are the GT edges the loss uses (pixels
within 2 px of another label) of label maps: random Voronoi partitions by default (1–16 regions per
patch), or random patch crops of label images (PNG or ``.npy``, up to ``--max-files`` kept in
memory) given with ``--labels``. The default architecture
is the authors' (224² patches, 1000 → 32 hidden units, ~100 M parameters): use a GPU for it. At the
end the script reports, on fresh pairs, the mean error ``‖θ̂ − θ‖`` next to the identity's
``‖I − θ‖``; the checkpoint is then read by ``create_loss("inverseform", checkpoint=...)``.
"""

from __future__ import annotations

import argparse
import glob
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from losses.inverseform import InverseNet, edge_target, random_affine, warp

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
EdgeSource = Callable[[int, int, torch.Generator], Tensor]


def voronoi_edges(n: int, patch: int, generator: torch.Generator) -> Tensor:
    """``[n,1,P,P]`` edge maps of random Voronoi partitions with 1–16 regions (1: no edge)."""
    k = 16
    seeds = torch.rand(n, k, 2, generator=generator) * patch
    used = torch.arange(k) < torch.randint(1, k + 1, (n, 1), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(patch), torch.arange(patch), indexing="ij")
    d2 = (yy - seeds[..., 0, None, None]) ** 2 + (xx - seeds[..., 1, None, None]) ** 2
    labels = d2.masked_fill(~used[..., None, None], float("inf")).argmin(1)
    return edge_target(labels)[:, None]


def label_file_edges(pattern: str, max_files: int) -> EdgeSource:
    """An edge source cutting random patch crops from the label images matching ``pattern``."""
    paths = sorted(glob.glob(pattern, recursive=True))[:max_files]
    if not paths:
        raise FileNotFoundError(f"--labels {pattern!r} matches no file; give a glob of label PNG/.npy files")
    maps = []
    for p in paths:
        lab = np.load(p) if p.endswith(".npy") else cv2.imread(p, cv2.IMREAD_UNCHANGED)
        if lab is None or lab.ndim != 2:
            raise ValueError(f"--labels: {p!r} is not a single-channel label image")
        maps.append(torch.from_numpy(lab.astype(np.int64)))

    def source(n: int, patch: int, generator: torch.Generator) -> Tensor:
        crops = []
        for i in torch.randint(len(maps), (n,), generator=generator).tolist():
            lab = maps[i]
            if min(lab.shape) < patch:
                raise ValueError(f"--labels: {paths[i]!r} is smaller than the patch size {patch}")
            y = int(torch.randint(lab.shape[0] - patch + 1, (1,), generator=generator))
            x = int(torch.randint(lab.shape[1] - patch + 1, (1,), generator=generator))
            crops.append(lab[y : y + patch, x : x + patch])
        return edge_target(torch.stack(crops))[:, None]

    return source


def training_pairs(
    source: EdgeSource, n: int, patch: int, generator: torch.Generator, device: str | torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """(warped edges, edges, θ): the warped copy plays the prediction, the original the target.
    A map without edges carries no transform: it is paired with the identity."""
    edges = source(n, patch, generator).to(device)
    theta = random_affine(n, generator).to(device)
    no_edge = edges.flatten(1).amax(1) == 0
    theta = torch.where(no_edge[:, None, None], IDENTITY.to(theta), theta)
    return warp(edges, theta), edges, theta


def train_inversenet(
    steps: int = 20000,
    patch: int = 224,
    hidden: Sequence[int] = (1000, 32),
    batch: int = 64,
    lr: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
    source: EdgeSource = voronoi_edges,
    log_every: int = 0,
) -> InverseNet:
    """Train an InverseNet from scratch (Adam, MSE on ``θ − I``); deterministic in ``seed`` on CPU."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = InverseNet(patch, hidden).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        pred, target, theta = training_pairs(source, batch, patch, generator, device)
        loss = F.mse_loss(net(pred, target), (theta - IDENTITY.to(theta)).flatten(1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and step % log_every == 0:
            elapsed = time.perf_counter() - start
            print(f"step {step}/{steps}  mse {loss.item():.5f}  {elapsed:.0f}s", flush=True)
    return net.eval()


@torch.no_grad()
def affine_errors(
    net: InverseNet, n: int = 256, seed: int = 1, source: EdgeSource = voronoi_edges
) -> tuple[float, float]:
    """Mean ``‖θ̂ − θ‖`` of the network and mean ``‖I − θ‖`` of the identity on fresh pairs."""
    device = next(net.parameters()).device
    pred, target, theta = training_pairs(source, n, net.patch, torch.Generator().manual_seed(seed), device)
    estimate = net(pred, target).view(n, 2, 3) + IDENTITY.to(theta)
    identity_err = (theta - IDENTITY.to(theta)).flatten(1).norm(dim=1).mean()
    return (estimate - theta).flatten(1).norm(dim=1).mean().item(), identity_err.item()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="checkpoint file to write (.pt)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--patch", type=int, default=224, help="patch side in pixels (authors: 224)")
    ap.add_argument("--hidden", type=int, nargs="+", default=[1000, 32], help="hidden layer widths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--labels", help="glob of label images (PNG/.npy); default: synthetic Voronoi maps")
    ap.add_argument("--max-files", type=int, default=500, help="label images kept in memory")
    args = ap.parse_args(argv)
    for name in ("steps", "batch", "patch", "max_files"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    source = label_file_edges(args.labels, args.max_files) if args.labels else voronoi_edges
    net = train_inversenet(
        args.steps, args.patch, args.hidden, args.batch, args.lr, args.seed, args.device, source, 500
    )
    err, identity_err = affine_errors(net, source=source)
    print(f"held-out pairs: mean |θ̂ − θ| = {err:.4f}, identity |I − θ| = {identity_err:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.cpu().checkpoint(), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
