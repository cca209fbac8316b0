"""Model factory: an SMP architecture + encoder, optionally with an auxiliary head for losses.

``SegModel(x)`` returns a dict: ``logits [B,C,H,W]``; ``aux [B,A,H,W]`` when the loss declares
``aux_channels`` (a 3×3 conv on the decoder features, resized to the logits); ``features`` (the
decoder output) when the loss asks for them. This is the one mechanism through which losses get
more than logits; the training loop knows no loss by name.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SegModel(nn.Module):
    """An SMP model whose forward also exposes decoder features and an optional auxiliary head."""

    def __init__(self, net: smp.base.SegmentationModel, aux_channels: int = 0, with_features: bool = False):
        super().__init__()
        self.net = net
        self.with_features = with_features
        head = net.segmentation_head[0]
        self.aux_head = nn.Conv2d(head.in_channels, aux_channels, 3, padding=1) if aux_channels else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if self.aux_head is None and not self.with_features:
            return {"logits": self.net(x)}
        self.net.check_input_shape(x)
        features = self.net.decoder(self.net.encoder(x))
        out = {"logits": self.net.segmentation_head(features)}
        if self.aux_head is not None:
            aux = self.aux_head(features)
            out["aux"] = F.interpolate(
                aux, size=out["logits"].shape[-2:], mode="bilinear", align_corners=False
            )
        if self.with_features:
            out["features"] = features
        return out


def freeze_unused(model: nn.Module, in_channels: int, size: int = 64) -> list[str]:
    """Freeze parameters that receive no gradient (e.g. encoder stages beyond ``encoder_depth``).

    DDP requires every trainable parameter to take part in the loss; one probe forward/backward on a
    small random batch finds those that do not. Returns their names. BatchNorm statistics touched by
    the probe are restored.
    """
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    out = model(torch.randn(2, in_channels, size, size))
    sum(o.float().mean() for o in out.values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in model.named_parameters():
        p.grad = None
        if n in unused:
            p.requires_grad_(False)
    model.load_state_dict(state)
    return unused


def build_model(
    arch: str,
    encoder_name: str,
    encoder_weights: str | None,
    *,
    in_channels: int,
    num_classes: int,
    aux_channels: int = 0,
    with_features: bool = False,
    kwargs: dict[str, Any] | None = None,
) -> SegModel:
    """``smp.create_model`` with clear errors for unknown names and unavailable pretrained weights."""
    try:
        net = smp.create_model(
            arch,
            encoder_name=encoder_name,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=num_classes,
            **(kwargs or {}),
        )
    except KeyError as e:
        raise ValueError(f"model: unknown arch {arch!r} or encoder {encoder_name!r}: {e}") from None
    except Exception as e:
        if encoder_weights is None:
            raise
        raise RuntimeError(
            f"model: could not load pretrained weights {encoder_weights!r} for encoder {encoder_name!r} "
            f"({type(e).__name__}: {e}). They are fetched from the Hugging Face Hub, which is not reachable "
            "here. On a machine with internet, pre-download them into a shared HF_HOME (build the model once "
            "with the same settings) and run with HF_HUB_OFFLINE=1, or set model.encoder_weights=null to "
            "train from scratch."
        ) from e
    return SegModel(net, aux_channels=aux_channels, with_features=with_features)
