"""Pixel and region losses against reference libraries (torch, MONAI, SMP) and against NumPy
transcriptions of the original papers' formulas, written here independently of ``losses/``."""

from __future__ import annotations

import monai.losses
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from loss_cases import B, C, H, W, batch, close

from losses import create_loss


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- NumPy helpers (float64) -------------------------------------------------------------------------


def np_probs(logits: torch.Tensor) -> np.ndarray:
    z = logits.double().numpy()
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_onehot(target: torch.Tensor) -> np.ndarray:
    t = target.numpy()
    return np.stack([(t == c) for c in range(C)], 1).astype(np.float64)


def np_pixels(logits: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Valid pixels only: probabilities ``[N,C]`` and one-hot ``[N,C]``."""
    valid = target.numpy() != 255
    p = np.moveaxis(np_probs(logits), 1, -1)[valid]
    t = np.moveaxis(np_onehot(target), 1, -1)[valid]
    return p, t


# --- cross-entropy, focal -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"class_weights": [0.5, 2.0, 1.0, 3.0]},
        {"label_smoothing": 0.1},
        {"class_weights": [1, 2, 3, 4], "label_smoothing": 0.2},
    ],
)
@pytest.mark.parametrize("ignored", [0.0, 0.3])
def test_ce_matches_torch_cross_entropy(kwargs, ignored):
    logits, target = batch(ignored)
    weight = torch.tensor(kwargs["class_weights"], dtype=torch.float32) if "class_weights" in kwargs else None
    expected = F.cross_entropy(
        logits, target, weight=weight, ignore_index=255, label_smoothing=kwargs.get("label_smoothing", 0.0)
    )
    close(create_loss("ce", num_classes=C, **kwargs)(logits, target), expected)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, target = batch(0.3)
    close(
        create_loss("focal", num_classes=C, gamma=0.0)(logits, target),
        F.cross_entropy(logits, target, ignore_index=255),
    )


def test_focal_matches_its_formula():
    logits, target = batch(0.3)
    p, t = np_pixels(logits, target)
    alpha = np.array([0.25, 1.0, 0.5, 2.0])
    pt = (p * t).sum(1)
    expected = np.mean(-(alpha @ t.T) * (1 - pt) ** 2 * np.log(pt))
    close(create_loss("focal", num_classes=C, gamma=2.0, alpha=alpha.tolist())(logits, target), expected)


# --- TopK, OHEM ---------------------------------------------------------------------------------------


def np_topk(logits, target, k):
    """Bootstrapped CE: mean CE of the ceil(k % of valid) pixels with the highest CE."""
    p, t = np_pixels(logits, target)
    ce = np.sort(-np.log((p * t).sum(1)))[::-1]
    n = int(np.ceil(len(ce) * k / 100))
    return ce[:n].mean()


@pytest.mark.parametrize(("k", "ignored"), [(10.0, 0.0), (10.0, 0.3), (2.5, 0.5), (100.0, 0.2), (33.0, 0.0)])
def test_topk_matches_bootstrapped_cross_entropy(k, ignored):
    logits, target = batch(ignored)
    close(create_loss("topk", num_classes=C, k=k)(logits, target), np_topk(logits, target, k))


def test_topk_with_a_handful_of_valid_pixels_selects_the_hardest():
    logits, target = batch()
    target = torch.full_like(target, 255)
    target[1, 3, 4:7] = torch.tensor([0, 1, 2])  # 3 valid pixels: 10 % of them rounds up to 1
    ce = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    close(create_loss("topk", num_classes=C)(logits, target), ce.max())


def np_ohem(logits, target, thresh, min_kept):
    """HRNet / mmsegmentation OHEM: keep p_t < max(thresh, p_t of rank min_kept·B), mean CE over them."""
    p, t = np_pixels(logits, target)
    pt = (p * t).sum(1)
    ranked = np.sort(pt)
    threshold = max(ranked[min(min_kept * B, len(ranked) - 1)], thresh)
    return -np.log(pt[pt < threshold]).mean()


@pytest.mark.parametrize(
    ("thresh", "min_kept", "ignored"), [(0.7, 10, 0.0), (0.7, 100, 0.2), (0.3, 5, 0.1), (0.9, 0, 0.0)]
)
def test_ohem_ce_matches_hrnet_selection(thresh, min_kept, ignored):
    logits, target = batch(ignored, scale=4.0)
    expected = np_ohem(logits, target, thresh, min_kept)
    close(create_loss("ohem_ce", num_classes=C, thresh=thresh, min_kept=min_kept)(logits, target), expected)


def test_ohem_ce_keeps_everything_when_min_kept_covers_the_batch():
    logits, target = batch(0.2, scale=4.0)
    expected = F.cross_entropy(logits, target, ignore_index=255)
    close(create_loss("ohem_ce", num_classes=C, min_kept=H * W)(logits, target), expected)


def test_ohem_ce_rejects_fractional_min_kept():
    with pytest.raises(ValueError, match="min_kept"):
        create_loss("ohem_ce", num_classes=C, min_kept=10.5)


# --- Dice, Jaccard against MONAI and SMP --------------------------------------------------------------


@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("batch_", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_dice_matches_monai(squared, batch_, include_background):
    logits, target = batch()
    ref = monai.losses.DiceLoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        squared_pred=squared,
        batch=batch_,
    )
    mine = create_loss(
        "dice", num_classes=C, squared=squared, batch=batch_, include_background=include_background
    )
    close(mine(logits, target), ref(logits, target.unsqueeze(1)))


@pytest.mark.parametrize("batch_", [True, False])
def test_jaccard_matches_monai(batch_):
    logits, target = batch()
    ref = monai.losses.DiceLoss(to_onehot_y=True, softmax=True, jaccard=True, batch=batch_)
    close(
        create_loss("jaccard", num_classes=C, batch=batch_)(logits, target), ref(logits, target.unsqueeze(1))
    )


@pytest.mark.parametrize(
    ("name", "ref"), [("dice", smp.losses.DiceLoss), ("jaccard", smp.losses.JaccardLoss)]
)
@pytest.mark.parametrize("ignored", [0.0, 0.3])
def test_dice_and_jaccard_match_smp_when_every_class_is_present(name, ref, ignored):
    logits, target = batch(ignored)
    kwargs = {"squared": False} if name == "dice" else {}
    expected = ref("multiclass", smooth=1e-5, ignore_index=255)(logits, target)
    close(create_loss(name, num_classes=C, **kwargs)(logits, target), expected)


def test_dice_penalises_false_positives_on_an_absent_class_unlike_smp():
    logits, target = batch(classes=C - 1)
    logits[:, C - 1] += 3.0  # mass on the absent class
    mine = create_loss("dice", num_classes=C, squared=False)(logits, target)
    smp_value = smp.losses.DiceLoss("multiclass", smooth=1e-5)(logits, target)
    assert mine > smp_value + 0.2  # SMP zeroes the absent class's term; here it scores ≈ 1


# --- Tversky family -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.5, 0.5), (0.9, 0.1)])
@pytest.mark.parametrize("batch_", [True, False])
def test_tversky_matches_monai_alpha_on_false_positives(alpha, beta, batch_):
    logits, target = batch()
    ref = monai.losses.TverskyLoss(to_onehot_y=True, softmax=True, alpha=alpha, beta=beta, batch=batch_)
    mine = create_loss("tversky", num_classes=C, alpha=alpha, beta=beta, batch=batch_)
    close(mine(logits, target), ref(logits, target.unsqueeze(1)))


def test_tversky_with_equal_halves_is_linear_dice():
    logits, target = batch(0.2, classes=C - 1)
    # (TP + s/2) / (TP + FP/2 + FN/2 + s/2) = (2 TP + s) / (2 TP + FP + FN + s)
    tversky = create_loss("tversky", num_classes=C, alpha=0.5, beta=0.5, smooth=0.5e-5)
    close(
        tversky(logits, target),
        create_loss("dice", num_classes=C, squared=False, smooth=1e-5)(logits, target),
    )


@pytest.mark.parametrize("batch_", [True, False])
def test_focal_tversky_with_gamma_one_is_tversky(batch_):
    logits, target = batch(0.2, classes=C - 1)
    kwargs = {"alpha": 0.2, "beta": 0.8, "batch": batch_}
    ft = create_loss("focal_tversky", num_classes=C, gamma=1.0, **kwargs)
    close(ft(logits, target), create_loss("tversky", num_classes=C, **kwargs)(logits, target))


def np_tversky_index(p, t, alpha, beta, s):
    """Per class over all valid pixels; alpha on FP, beta on FN (Salehi et al.)."""
    tp = (p * t).sum(0)
    return (tp + s) / (tp + alpha * (p * (1 - t)).sum(0) + beta * ((1 - p) * t).sum(0) + s)


def test_focal_tversky_matches_abraham_khan():
    logits, target = batch(0.2)
    p, t = np_pixels(logits, target)
    ti = np_tversky_index(p, t, alpha=0.3, beta=0.7, s=1e-5)
    expected = np.mean((1 - ti) ** (1 / (4 / 3)))  # paper: Σ_c (1 - TI_c)^(1/γ), γ = 4/3; mean here
    close(create_loss("focal_tversky", num_classes=C)(logits, target), expected)


def test_tversky_rejects_two_zero_weights():
    with pytest.raises(ValueError, match="alpha=0"):
        create_loss("tversky", num_classes=C, alpha=0.0, beta=0.0)


def test_include_background_false_needs_two_classes():
    with pytest.raises(ValueError, match="include_background"):
        create_loss("jaccard", num_classes=1, include_background=False)


# --- log-cosh Dice, sensitivity-specificity, generalised Dice -------------------------------------------


def test_log_cosh_dice_matches_jadon():
    logits, target = batch(0.2)
    p, t = np_pixels(logits, target)
    dice = (2 * (p * t).sum(0) + 1e-5) / (p.sum(0) + t.sum(0) + 1e-5)
    x = 1 - dice.mean()
    expected = np.log((np.exp(x) + np.exp(-x)) / 2)
    close(create_loss("log_cosh_dice", num_classes=C)(logits, target), expected)


@pytest.mark.parametrize("r", [0.05, 0.5])
def test_sensitivity_specificity_matches_brosch(r):
    logits, target = batch(0.2, classes=C - 1)  # the absent class has only a specificity term
    p, t = np_pixels(logits, target)
    err = (t - p) ** 2
    sens = (err * t).sum(0) / (t.sum(0) + 1e-5)
    spec = (err * (1 - t)).sum(0) / ((1 - t).sum(0) + 1e-5)
    expected = np.mean(r * sens + (1 - r) * spec)
    close(create_loss("sensitivity_specificity", num_classes=C, r=r)(logits, target), expected)


@pytest.mark.parametrize("batch_", [True, False])
@pytest.mark.parametrize("classes", [C, C - 1])
@pytest.mark.parametrize("include_background", [True, False])
def test_generalized_dice_matches_monai(batch_, classes, include_background):
    logits, target = batch(classes=classes)
    # MONAI's raw weights 1/(Σt)² make its smoothing 1e-5 non-negligible; without smoothing the two
    # agree exactly (the ratio is invariant to the weights' scale), absent-class rule included.
    ref = monai.losses.GeneralizedDiceLoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        batch=batch_,
        smooth_nr=0,
        smooth_dr=0,
    )
    mine = create_loss(
        "generalized_dice", num_classes=C, smooth=0.0, batch=batch_, include_background=include_background
    )
    close(mine(logits, target), ref(logits, target.unsqueeze(1)))


def test_generalized_dice_with_default_smoothing_matches_sudre():
    logits, target = batch(0.2)
    p, t = np_pixels(logits, target)
    w = 1 / t.sum(0) ** 2
    expected = 1 - 2 * (w * (p * t).sum(0)).sum() / (w * (p.sum(0) + t.sum(0))).sum()
    close(create_loss("generalized_dice", num_classes=C)(logits, target), expected)


# --- Lovász-Softmax options ---------------------------------------------------------------------------


def np_lovasz_class(errors: np.ndarray, fg: np.ndarray, smooth: float) -> float:
    """Berman et al., Alg. 1 for one class: errors sorted decreasingly, dotted with the differences
    of the (smoothed) Jaccard loss of each prefix."""
    order = np.argsort(-errors, kind="stable")
    e, f = errors[order], fg[order]
    inter = f.sum() - np.cumsum(f)
    union = f.sum() + np.cumsum(1 - f)
    jaccard = 1 - (inter + smooth) / (union + smooth)
    return float(e @ np.diff(jaccard, prepend=0.0))


@pytest.mark.parametrize(
    ("batch_", "smooth", "include_background", "classes"),
    [(True, 0.0, False, "present"), (False, 0.5, True, "present"), (True, 2.0, False, "all")],
)
def test_lovasz_options_match_berman_transcription(batch_, smooth, include_background, classes):
    logits, target = batch(0.2, classes=C - 1)  # class C-1 absent: "all" charges it
    first = 0 if include_background else 1
    per_group = []
    for images in [range(B)] if batch_ else [[b] for b in range(B)]:
        p, t = np_pixels(logits[list(images)], target[list(images)])
        scores = [
            np_lovasz_class(np.abs(t[:, c] - p[:, c]), t[:, c], smooth)
            for c in range(first, C)
            if classes == "all" or t[:, c].any()
        ]
        per_group.append(np.mean(scores))
    loss = create_loss(
        "lovasz",
        num_classes=C,
        batch=batch_,
        smooth=smooth,
        include_background=include_background,
        classes=classes,
    )
    close(loss(logits, target), np.mean(per_group))


def test_lovasz_gradient_is_exact_in_float32_for_large_counts():
    from losses.lovasz import lovasz_grad

    n = 2**25
    fg = torch.zeros(n, dtype=torch.bool)
    fg[::3] = True
    exact, single = lovasz_grad(fg), lovasz_grad(fg, dtype=torch.float32)
    torch.testing.assert_close(single.double(), exact, rtol=1e-6, atol=0)
