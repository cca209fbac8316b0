"""Segmentation losses of the survey (Azad et al., arXiv 2312.05391) behind one registry.

>>> from losses import create_loss, list_losses
>>> loss = create_loss("focal", num_classes=9, gamma=2.0)
>>> value = loss(logits, target)  # logits [B,C,H,W], target [B,H,W] int64 (255 = ignore)

This package never imports ``bench``; use it in your own training code as well.
"""

# importing a module registers its losses; composite last (its default terms name other losses)
from . import boundary, cldice, combination, inverseform, lovasz, pixel, region, rmi, tloss, wasserstein  # noqa: F401, I001
from . import composite  # noqa: F401
from .registry import (
    CATEGORIES,
    RUNTIME_INPUTS,
    LossInfo,
    create_loss,
    list_losses,
    loss_info,
    register_loss,
)

__all__ = [
    "CATEGORIES",
    "RUNTIME_INPUTS",
    "LossInfo",
    "create_loss",
    "list_losses",
    "loss_info",
    "register_loss",
]
