"""InverseForm (Borse et al., CVPR 2021): CE + edge BCE + the affine distance measured by a frozen InverseNet.

The InverseNet regresses the affine transform that maps a target edge patch onto a predicted one; the
loss is the distance of that transform from the identity. The authors' pretrained regressor cannot
be downloaded here, so ``scripts/train_inverseform.py`` trains one with the paper's recipe (edge maps
paired with randomly affine-warped copies) using the helpers below, and the loss loads it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SegLoss, masked_mean
from .pixel import CrossEntropyLoss
from .registry import register_loss

TRAIN_HINT = (
    "train one with `python scripts/train_inverseform.py --out checkpoints/inversenet.pt` "
    "and pass its path as loss.params.checkpoint"
)


class InverseNet(nn.Module):
    """MLP regressor of the affine transform between two ``patch × patch`` edge maps.

    Input: predicted and target edge patches ``[N,P,P]`` (or ``[N,1,P,P]``), values in [0, 1]; output
    ``[N,6]``: ``θ − I`` flattened, θ the 2×3 matrix of ``torch.nn.functional.affine_grid`` that warps
    the target patch onto the predicted one. The architecture is the authors' (flattened pair →
    1000 → 32 → out, ReLU); they output 4 distance coefficients, here the full affine offset.
    """

    def __init__(self, patch: int = 224, hidden: Sequence[int] = (1000, 32)) -> None:
        super().__init__()
        self.patch, self.hidden = int(patch), [int(h) for h in hidden]
        sizes = [2 * self.patch**2, *self.hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
        self.fc = nn.Sequential(*layers, nn.Linear(sizes[-1], 6))

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        n = pred.shape[0]
        return self.fc(torch.cat([pred.reshape(n, -1), target.reshape(n, -1)], 1))

    def checkpoint(self) -> dict:
        """What ``load_inversenet`` reads back: weights and the architecture."""
        return {"state_dict": self.state_dict(), "patch": self.patch, "hidden": self.hidden}


def load_inversenet(path: str | Path) -> InverseNet:
    """A frozen InverseNet from a checkpoint written by ``scripts/train_inverseform.py``. Its weights
    become buffers: they move with the loss (``.to``) but stay out of ``loss.parameters()``, which
    the runner hands to the optimiser."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"loss 'inverseform': checkpoint {str(path)!r} does not exist; {TRAIN_HINT}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not {"state_dict", "patch", "hidden"} <= ckpt.keys():
        raise ValueError(
            f"loss 'inverseform': {str(path)!r} is not an InverseNet checkpoint "
            f"(expected keys state_dict, patch, hidden); {TRAIN_HINT}"
        )
    net = InverseNet(ckpt["patch"], ckpt["hidden"])
    net.load_state_dict(ckpt["state_dict"])
    for layer in net.modules():
        for name, param in list(layer.named_parameters(recurse=False)):
            delattr(layer, name)
            layer.register_buffer(name, param.detach())
    return net.eval()


def random_affine(n: int, generator: torch.Generator | None = None, strength: float = 1.0) -> Tensor:
    """``[n,2,3]`` random affine matrices near the identity: rotation ±10°, scale ×(1 ± 0.1),
    shear ±0.1 and translation ±0.1 (of the half-width), all times ``strength``."""
    u = torch.rand(n, 5, generator=generator) * 2 - 1
    limits = torch.tensor([math.radians(10), 0.1, 0.1, 0.1, 0.1])
    rot, scale, shear, tx, ty = (u * strength * limits).unbind(1)
    cos, sin, s = rot.cos(), rot.sin(), 1 + scale
    a = torch.stack([s * cos, s * (cos * shear - sin), s * sin, s * (sin * shear + cos)], 1).view(n, 2, 2)
    return torch.cat([a, torch.stack([tx, ty], 1)[:, :, None]], 2)


def warp(edges: Tensor, theta: Tensor) -> Tensor:
    """Edge maps ``[N,1,H,W]`` resampled (bilinear, zeros outside) under affine ``θ [N,2,3]``."""
    grid = F.affine_grid(theta.to(edges), list(edges.shape), align_corners=False)
    return F.grid_sample(edges, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def tiles(maps: Tensor, patch: int) -> Tensor:
    """``[B,1,H,W]`` → ``[B·r·c, P, P]``: resized (bilinear) to ``(r·P, c·P)``, r = ⌈H/P⌉, c = ⌈W/P⌉,
    then cut into patches (the authors resize Cityscapes to 672×1344 and cut 3×6 patches of 224²)."""
    rows, cols = math.ceil(maps.shape[-2] / patch), math.ceil(maps.shape[-1] / patch)
    x = F.interpolate(maps, size=(rows * patch, cols * patch), mode="bilinear", align_corners=False)
    x = x.view(-1, rows, patch, cols, patch).permute(0, 1, 3, 2, 4)
    return x.reshape(-1, patch, patch)


def edge_target(labels: Tensor, radius: float = 2.0) -> Tensor:
    """Edges ``[B,H,W]`` float of label maps: pixels within Euclidean ``radius`` of a pixel with
    another label, as the authors' ``onehot_to_binary_edges`` — except that the image border is no
    edge (their zero padding makes a band along it one). An ignored region counts as a label of its
    own. Computed on the device by comparing shifted copies."""
    r = int(radius)
    h, w = labels.shape[-2:]
    padded = F.pad(labels, (r, r, r, r), value=-1)
    inside = F.pad(torch.ones_like(labels, dtype=torch.bool), (r, r, r, r))
    edge = torch.zeros_like(labels, dtype=torch.bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if 0 < dy * dy + dx * dx <= radius**2:
                window = (..., slice(r + dy, r + dy + h), slice(r + dx, r + dx + w))
                edge |= inside[window] & (padded[window] != labels)
    return edge.float()


@register_loss(
    "inverseform",
    category="boundary",
    reference="Borse, Wang, Zhang, Porikli. InverseForm: A Loss Function for Structured Boundary-Aware "
    "Segmentation. CVPR 2021",
    inputs=("aux",),
    aux_channels=1,
    ranges={"edge_weight": (0, None), "inverse_weight": (0, None), "edge_radius": (0, None)},
)
class InverseFormLoss(SegLoss):
    """InverseForm ``CE + β·BCE(edge, edge_gt) + γ·L_IF`` with a frozen, self-trained InverseNet.

    The ``aux`` head ``[B,1,H,W]`` predicts edge logits; GT edges are the pixels within
    ``edge_radius`` = 2 of another label. BCE is class-balanced over the batch's valid pixels
    (positives weighted by the negative fraction and vice versa), as the authors' ``bce2d``.
    ``L_IF``: sigmoid edges and GT edges (both zeroed at ignored pixels) are tiled into the
    InverseNet's patches; per patch the InverseNet regresses ``θ − I`` and the loss is its Euclidean
    norm, averaged over patches with valid pixels. β = γ = 0.3 and the patch tiling follow the
    authors' code; it also adds 0.1 × an "edge attention" CE (pixels with edge probability > 0.8)
    and class-weights the CE per image, which the paper's equation does not — left out here. The
    authors' code feeds ``log_softmax`` of the one-channel edge logits (identically 0) to the
    InverseNet; here it receives the sigmoid probabilities, as the paper describes.
    ``checkpoint`` is required: a file written by ``scripts/train_inverseform.py``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        checkpoint: str | None = None,
        edge_weight: float = 0.3,
        inverse_weight: float = 0.3,
        edge_radius: float = 2.0,
    ) -> None:
        super().__init__(num_classes, ignore_index)
        if checkpoint is None:
            raise ValueError(f"loss 'inverseform' needs an InverseNet checkpoint, got None; {TRAIN_HINT}")
        self.inverse_net = load_inversenet(checkpoint)
        self.edge_weight, self.inverse_weight = float(edge_weight), float(inverse_weight)
        self.edge_radius = float(edge_radius)
        self.ce = CrossEntropyLoss(num_classes, ignore_index)

    def forward(self, logits: Tensor, target: Tensor, aux: Tensor) -> Tensor:
        b, _, h, w = logits.shape
        if aux.shape != (b, 1, h, w):
            raise ValueError(
                f"loss 'inverseform': aux must be [B,1,H,W] = {[b, 1, h, w]}, got {list(aux.shape)}"
            )
        valid = self.valid(target).float()
        edge_logit = aux.float()[:, 0]
        with torch.no_grad():
            gt = edge_target(target, self.edge_radius) * valid
            pos = gt.sum()
            weight = torch.where(gt > 0, valid.sum() - pos, pos) / valid.sum().clamp_min(1)
        bce = F.binary_cross_entropy_with_logits(edge_logit, gt, reduction="none") * weight
        pred = torch.sigmoid(edge_logit) * valid
        patch = self.inverse_net.patch
        offsets = self.inverse_net(tiles(pred[:, None], patch), tiles(gt[:, None], patch))
        has_valid = tiles(valid[:, None], patch).flatten(1).amax(1) > 0
        l_if = masked_mean(torch.linalg.vector_norm(offsets, dim=1), has_valid)
        return (
            self.ce(logits, target)
            + self.edge_weight * masked_mean(bce, valid.bool())
            + self.inverse_weight * l_if
        )
