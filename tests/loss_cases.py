"""Shared inputs and tolerance of the loss reference tests."""

from __future__ import annotations

import torch

B, C, H, W = 2, 4, 12, 12
TOL = {"rtol": 1e-5, "atol": 1e-6}


def batch(
    ignored: float = 0.0, classes: int = C, num_classes: int = C, scale: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and a target in which every class of ``range(classes)`` occurs."""
    logits = scale * torch.randn(B, num_classes, H, W)
    target = torch.randint(0, classes, (B, H, W))
    target = torch.where(torch.rand(B, H, W) < ignored, torch.full_like(target, 255), target)
    target[0, 0, :classes] = torch.arange(classes)
    return logits, target


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual.double(), torch.as_tensor(expected, dtype=torch.float64), **TOL)
