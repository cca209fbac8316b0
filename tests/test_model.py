import pytest
import torch

from bench.model import build_model

TINY = {"encoder_depth": 3, "decoder_channels": [16, 8, 8]}


def test_plain_model_returns_logits():
    m = build_model("unet", "resnet18", None, in_channels=1, num_classes=5, kwargs=TINY)
    out = m(torch.randn(2, 1, 32, 32))
    assert list(out) == ["logits"] and out["logits"].shape == (2, 5, 32, 32)


def test_aux_head_and_features_are_exposed_for_losses_that_ask():
    m = build_model(
        "deeplabv3plus", "resnet18", None, in_channels=3, num_classes=4, aux_channels=3, with_features=True
    )
    m.eval()
    out = m(torch.randn(1, 3, 64, 64))
    assert out["logits"].shape == (1, 4, 64, 64)
    assert out["aux"].shape == (1, 3, 64, 64)  # resized to the logits
    assert out["features"].ndim == 4 and out["features"].shape[-1] < 64  # DeepLabV3+ decodes at 1/4


def test_unavailable_pretrained_weights_say_what_to_do():
    with pytest.raises(RuntimeError, match=r"encoder_weights=null"):
        build_model("unet", "resnet18", "imagenet", in_channels=3, num_classes=2)


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown arch 'unetx'"):
        build_model("unetx", "resnet18", None, in_channels=3, num_classes=2)
