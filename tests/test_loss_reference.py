"""Losses against transcriptions of their authors' public code (``reference_impls``): value and
gradient on random inputs with absent classes and, where the original handles them, ignored pixels.

Our losses compute in float32, the transcriptions in float64: values agree to 1e-5 relative, and
gradients to 1e-5 relative in norm (``‖g - g_ref‖ ≤ 1e-5 ‖g_ref‖``)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference_impls import (
    IGNORE,
    abl_authors,
    cbl_authors,
    cbl_authors_boundary,
    cldice_authors,
    combo_authors,
    masked_ce,
    rmi_authors,
)

from losses import create_loss, list_losses
from losses.fidelity import AUTHORS_CODE


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def blocky_target(b: int, h: int, w: int, classes: int, block: int = 3, ignored: float = 0.0) -> torch.Tensor:
    """Blocks of random classes from ``range(classes)`` (so classes can be absent), some ignored."""
    coarse = torch.randint(0, classes, (b, -(-h // block), -(-w // block)))
    target = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w].contiguous()
    return torch.where(torch.rand(b, h, w) < ignored, torch.full_like(target, IGNORE), target)


def value_and_grad(fn, logits: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.detach().clone().requires_grad_()
    value = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach().double(), grad.double()


def assert_equal_to_reference(ours, reference, logits, *args, **kwargs) -> None:
    value, grad = value_and_grad(ours, logits.float(), *args, **kwargs)
    ref_value, ref_grad = value_and_grad(reference, logits.double(), *args, **kwargs)
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-7)
    assert ref_grad.norm() > 0
    assert (grad - ref_grad).norm() <= 1e-5 * ref_grad.norm(), (grad - ref_grad).norm() / ref_grad.norm()


# --- combo --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (0.3, 0.1), (0.7, 0.9)])
def test_combo_with_two_classes_is_the_authors_binary_loss(alpha, beta):
    logits = 2 * torch.randn(2, 2, 12, 12)
    target = blocky_target(2, 12, 12, 2)

    def reference(x, t):
        p = x.softmax(1)[:, 1]  # the foreground map of the authors' single sigmoid channel
        return combo_authors(p, (t == 1).double(), ce_w=beta, ce_d_w=alpha, smooth=1.0) + (1 - alpha)

    loss = create_loss("combo", num_classes=2, alpha=alpha, beta=beta)
    assert_equal_to_reference(loss, reference, logits, target)


def test_combo_multiclass_is_the_binary_loss_per_foreground_class_with_ignored_pixels():
    logits = 2 * torch.randn(2, 4, 12, 12)
    target = blocky_target(2, 12, 12, 3, ignored=0.2)  # class 3 absent

    def reference(x, t):
        valid = t != IGNORE
        p = x.softmax(1).permute(1, 0, 2, 3)[:, valid]  # [C, valid pixels]
        y = F.one_hot(t[valid], 4).T.double()
        return torch.stack([combo_authors(p[c], y[c]) for c in range(1, 4)]).mean() + 0.5

    assert_equal_to_reference(create_loss("combo", num_classes=4), reference, logits, target)


# --- active boundary ------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.2, 0.0])
def test_active_boundary_with_the_batch_threshold_is_the_authors_abl(smoothing):
    # no ignored pixels: the original makes ignored regions GT boundary (documented deviation)
    target = blocky_target(2, 16, 18, 4, block=4)
    target[:, :, :3] = 0  # blocky, with ties between equidistant neighbours, class 3 often absent
    guess = F.one_hot(blocky_target(2, 16, 18, 4, 5), 4).permute(0, 3, 1, 2)
    logits = 1.5 * torch.randn(2, 4, 16, 18) + 2 * guess
    loss = create_loss(
        "active_boundary", num_classes=4, boundary_ratio=0.2, threshold="batch", label_smoothing=smoothing
    )

    def reference(x, t):
        return masked_ce(x, t) + abl_authors(x, t, max_n_ratio=0.2, smoothing=smoothing)

    assert_equal_to_reference(loss, reference, logits, target)


def test_active_boundary_per_image_threshold_keeps_the_top_kl_pixels_of_each_image():
    logits = torch.randn(2, 3, 16, 16)
    loss = create_loss("active_boundary", num_classes=3, boundary_ratio=0.05)
    valid = torch.ones(2, 16, 16, dtype=torch.bool)
    logp = logits.log_softmax(1)
    p = logp.exp()
    kl = torch.zeros(2, 16, 16)
    kl[:, :-1] += (p[:, :, :-1] * (logp[:, :, :-1] - logp[:, :, 1:])).sum(1)
    kl[:, :, :-1] += (p[..., :-1] * (logp[..., :-1] - logp[..., 1:])).sum(1)
    top = torch.zeros(2, 256, dtype=torch.bool)
    top.scatter_(1, kl.flatten(1).topk(int(256 * 0.05), 1).indices, True)  # 12 of 256 per image
    expected = F.max_pool2d(top.view(2, 1, 16, 16).float(), 3, 1, 1)[:, 0] > 0
    torch.testing.assert_close(loss.predicted_boundary(logp, valid), expected)


def test_active_boundary_exact_distances_are_one_option_away():
    target = torch.zeros(1, 12, 12, dtype=torch.long)
    target[0, 4:9, 3:10] = 1
    valid = torch.ones_like(target, dtype=torch.bool)
    truncated = create_loss("active_boundary", num_classes=2).gt_distance(target, valid)[0]
    exact_loss = create_loss("active_boundary", num_classes=2, integer_distances=False)
    exact = exact_loss.gt_distance(target, valid)[0]
    assert exact[0, 0, 0].item() == pytest.approx(math.hypot(3, 3) - 1)  # nearest boundary pixel (3, 3)
    assert truncated[0, 0, 0].item() == 3.0
    torch.testing.assert_close(truncated, (exact + 1).floor().clamp_min(1) - 1)


# --- conditional boundary -------------------------------------------------------------------------------


@pytest.mark.parametrize("dilation_ratio", [0.02, 0.1])
def test_conditional_boundary_is_the_authors_cbl(dilation_ratio):
    # features at the label resolution; logits from a bias-free linear head, as the loss assumes
    target = blocky_target(2, 14, 15, 4, block=4, ignored=0.05)  # class 3 often absent
    target[0, 5:9, 5:9] = 0  # class-0 boundary pixels, which the authors' A2P&N term leaves out
    features = torch.randn(2, 5, 14, 15)
    head = torch.randn(4, 5)
    loss = create_loss("conditional_boundary", num_classes=4, dilation_ratio=dilation_ratio)

    def ours(f, t):
        return loss(torch.einsum("cd,bdhw->bchw", head.to(f.dtype), f), t, features=f)

    def reference(f, t):
        return cbl_authors(f, head.double(), t, 4, dilation_ratio)

    assert_equal_to_reference(ours, reference, features, target)


def test_conditional_boundary_band_is_computed_at_the_label_resolution_then_resized():
    target = blocky_target(2, 64, 96, 3, block=16, ignored=0.02)
    loss = create_loss("conditional_boundary", num_classes=3)  # k = round(0.02 · 115.4) = 2
    torch.testing.assert_close(loss.boundary(target), cbl_authors_boundary(target))
    t, boundary = loss.resized(target, (16, 24))  # the features' resolution
    expected = F.interpolate(cbl_authors_boundary(target)[:, None].float(), size=(16, 24), mode="nearest")
    torch.testing.assert_close(boundary, expected[:, 0] > 0)
    torch.testing.assert_close(
        t, F.interpolate(target[:, None].float(), size=(16, 24), mode="nearest")[:, 0].long()
    )


# --- the README's "authors' code" column ---------------------------------------------------------------


def test_every_registered_loss_says_how_it_compares_with_its_authors_code():
    kinds = ("equal", "documented deviation", "no public code", "composite")
    missing = [name for name in list_losses() if name not in AUTHORS_CODE]
    assert not missing, f"add these losses to losses/fidelity.py: {missing}"
    assert all(text.startswith(kinds) for text in AUTHORS_CODE.values())


# --- RMI ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "size"), [("max", 3), ("avg", 4), ("avg", 3)])
def test_rmi_term_is_the_official_rmi_lower_bound(pool, size):
    # no ignored pixels: the official code keeps points over ignored regions (documented deviation);
    # ours subtracts the constant r²·ln α, i.e. ½·ln α per class after the division by r²
    logits = 2 * torch.randn(2, 4, 24, 24)
    target = blocky_target(2, 24, 24, 3, block=5)  # class 3 absent
    loss = create_loss("rmi", num_classes=4, pool=pool, pool_size=size, ce_weight=0.0)

    def reference(x, t):
        return rmi_authors(x, t, 4, pool_way=pool, pool=size, weight_lambda=0.0) - 4 * 0.5 * math.log(5e-4)

    assert_equal_to_reference(loss, reference, logits, target)


def test_rmi_pixel_term_is_the_official_bce_up_to_its_count_plus_one():
    logits, target = 2 * torch.randn(2, 3, 12, 12), blocky_target(2, 12, 12, 3, ignored=0.2)
    loss = create_loss("rmi", num_classes=3, ce_weight=1.0)
    n = (target != IGNORE).sum().item()

    def reference(x, t):
        return rmi_authors(x, t, 3, weight_lambda=1.0) * (n + 1) / n

    assert_equal_to_reference(loss, reference, logits, target)


# --- clDice ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [10, 3])
def test_cldice_with_two_classes_is_the_authors_soft_dice_cldice(iterations):
    # ignored pixels enter both as 0 (probability and label), the convention the loss documents
    logits = 2 * torch.randn(2, 2, 20, 22)
    target = blocky_target(2, 20, 22, 2, block=3, ignored=0.1)
    loss = create_loss("cldice", num_classes=2, include_background=False, iterations=iterations)

    def reference(x, t):
        valid = (t != IGNORE)[:, None]
        probs = x.softmax(1) * valid
        onehot = F.one_hot(torch.where(valid[:, 0], t, 0), 2).permute(0, 3, 1, 2).to(x.dtype) * valid
        return cldice_authors(onehot, probs, num_iter=iterations, exclude_background=True)

    assert_equal_to_reference(loss, reference, logits, target)
