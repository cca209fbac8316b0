"""Combination losses against MONAI and against NumPy transcriptions of the original papers' formulas,
written here independently of ``losses/``."""

from __future__ import annotations

import monai.losses
import numpy as np
import pytest
import torch
from helpers import bench_cli, records
from loss_cases import B, C, H, W, batch, close

from losses import create_loss, loss_info


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def np_pixels(logits: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Valid pixels only, float64: softmax probabilities ``[N,C]`` and one-hot target ``[N,C]``."""
    z = np.moveaxis(logits.double().numpy(), 1, -1)
    e = np.exp(z - z.max(-1, keepdims=True))
    t = target.numpy()
    valid = t != 255
    p = (e / e.sum(-1, keepdims=True))[valid]
    return p, np.eye(z.shape[-1])[t[valid]]


def np_linear_dice(p: np.ndarray, t: np.ndarray, s: float) -> np.ndarray:
    return (2 * (p * t).sum(0) + s) / (p.sum(0) + t.sum(0) + s)


# --- Combo --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (0.3, 0.8)])
@pytest.mark.parametrize("classes", [C, C - 1])
@pytest.mark.parametrize("include_background", [False, True])
def test_combo_matches_taghanaki(alpha, beta, classes, include_background):
    logits, target = batch(0.2, classes)
    p, t = np_pixels(logits, target)
    first = 0 if include_background else 1
    p, t = p[:, first:], t[:, first:]
    bce = -(beta * t * np.log(p) + (1 - beta) * (1 - t) * np.log(1 - p)).mean()  # over pixels and classes
    dice = np_linear_dice(p, t, 1.0).mean()
    expected = alpha * bce - (1 - alpha) * dice + (1 - alpha)  # the original, shifted by 1-α to be ≥ 0
    mine = create_loss("combo", num_classes=C, alpha=alpha, beta=beta, include_background=include_background)
    close(mine(logits, target), expected)


def test_combo_beta_acts_with_two_classes():
    logits, target = batch(0.2, 2, num_classes=2)
    values = [create_loss("combo", num_classes=2, beta=b)(logits, target).item() for b in (0.1, 0.9)]
    assert abs(values[0] - values[1]) > 1e-2


@pytest.mark.parametrize("beta", [0.5, 0.8])
def test_combo_bce_term_is_accurate_for_confident_errors(beta):
    logits, target = batch(0.2)
    wrong = torch.where(target == 255, 0, (target + 1) % C)
    logits = 25 * torch.nn.functional.one_hot(wrong, C).permute(0, 3, 1, 2).float()  # 1 - p_wrong ≈ 4e-11
    z = np.moveaxis(logits.double().numpy(), 1, -1)[target.numpy() != 255]
    t = np.eye(C)[target.numpy()[target.numpy() != 255]]
    lse = np.log(np.exp(z).sum(1, keepdims=True))
    log_p = z - lse
    log_rest = np.stack([np.log(np.exp(np.delete(z, c, 1)).sum(1)) for c in range(C)], 1) - lse  # ln(1 - p)
    expected = -(beta * t * log_p + (1 - beta) * (1 - t) * log_rest).mean()
    logits.requires_grad_()
    value = create_loss("combo", num_classes=C, alpha=1.0, beta=beta, include_background=True)(logits, target)
    close(value, expected)
    value.backward()
    assert torch.isfinite(logits.grad).all()


# --- Exponential logarithmic ----------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [C, C - 1])
@pytest.mark.parametrize(
    ("w_dice", "w_cross", "gamma_dice", "gamma_cross", "first"),
    [(0.8, 0.2, 0.3, 0.3, 0), (0.5, 0.5, 2.0, 1.0, 1)],
)
def test_exp_log_matches_wong(classes, w_dice, w_cross, gamma_dice, gamma_cross, first):
    logits, target = batch(0.2, classes)
    p, t = np_pixels(logits, target)
    dice_term = np.mean((-np.log(np_linear_dice(p, t, 1.0)[first:])) ** gamma_dice)
    f = t.sum(0)
    w = np.sqrt(f.sum() / np.where(f > 0, f, 1))  # w_l = (Σ_k f_k / f_l)^0.5
    cross_term = np.mean(w[t.argmax(1)] * (-np.log((p * t).sum(1))) ** gamma_cross)
    expected = w_dice * dice_term + w_cross * cross_term
    mine = create_loss(
        "exp_log",
        num_classes=C,
        w_dice=w_dice,
        w_cross=w_cross,
        gamma_dice=gamma_dice,
        gamma_cross=gamma_cross,
        include_background=first == 0,
    )
    close(mine(logits, target), expected)


# --- Unified focal --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("delta", "gamma"), [(0.6, 0.5), (0.7, 0.75)])
def test_unified_focal_terms_match_monai_on_binary_inputs(delta, gamma):
    logits, target = batch(num_classes=2, classes=2)
    probs, y = logits.softmax(1), target.unsqueeze(1)
    tversky = monai.losses.unified_focal_loss.AsymmetricFocalTverskyLoss(
        to_onehot_y=True, delta=delta, gamma=gamma
    )
    focal = monai.losses.unified_focal_loss.AsymmetricFocalLoss(to_onehot_y=True, delta=delta, gamma=gamma)
    mine = {
        w: create_loss("unified_focal", num_classes=2, weight=w, delta=delta, gamma=gamma) for w in (0.0, 1.0)
    }
    close(mine[0.0](logits, target), tversky(probs, y))
    # MONAI averages its focal term over the two class channels too; the authors sum over classes
    close(mine[1.0](logits, target), 2 * focal(probs, y))


@pytest.mark.parametrize(
    ("weight", "eps", "background"), [(0.5, 1e-7, True), (0.2, 1e-7, True), (0.3, 1.0, False)]
)
@pytest.mark.parametrize("batch_", [False, True])
def test_unified_focal_matches_yeung_multiclass(weight, eps, background, batch_):
    delta, gamma = 0.6, 0.5
    logits, target = batch(0.2)
    ft_terms = []
    for images in [range(B)] if batch_ else [[b] for b in range(B)]:
        p, t = np_pixels(logits[list(images)], target[list(images)])
        tp, fn, fp = (p * t).sum(0), ((1 - p) * t).sum(0), (p * (1 - t)).sum(0)
        mti = (tp + eps) / (tp + delta * fn + (1 - delta) * fp + eps)
        # background suppressed (left out without it), rare classes enhanced
        ft_terms += [*([1 - mti[0]] if background else []), *((1 - mti[1:]) ** (1 - gamma))]
    p, t = np_pixels(logits, target)
    pt, label = (p * t).sum(1), t.argmax(1)
    suppressed = (1 - delta) * (1 - pt) ** gamma * -np.log(pt) if background else 0 * pt
    focal = np.where(label == 0, suppressed, delta * -np.log(pt))
    expected = weight * focal.mean() + (1 - weight) * np.mean(ft_terms)
    mine = create_loss(
        "unified_focal",
        num_classes=C,
        weight=weight,
        smooth=eps,
        batch=batch_,
        include_background=background,
    )
    close(mine(logits, target), expected)


def test_unified_focal_needs_a_background_and_a_rare_class():
    with pytest.raises(ValueError, match="num_classes=1"):
        create_loss("unified_focal", num_classes=1)


# --- Dice + CE ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [C, C - 1])
def test_dice_ce_matches_transunet(classes):
    logits, target = batch(0.2, classes)
    p, t = np_pixels(logits, target)
    ce = -np.log((p * t).sum(1)).mean()
    dice = (2 * (p * t).sum(0) + 1e-5) / ((p * p).sum(0) + (t * t).sum(0) + 1e-5)  # TransUNet's DiceLoss
    close(create_loss("dice_ce", num_classes=C)(logits, target), 0.5 * ce + 0.5 * (1 - dice.mean()))


def test_dice_ce_region_options_are_its_dice_terms():
    logits, target = batch(0.2)
    options = {"smooth": 1.0, "batch": False, "include_background": False}
    expected = 0.3 * create_loss("ce", num_classes=C)(logits, target) + 0.7 * create_loss(
        "dice", num_classes=C, **options
    )(logits, target)
    mine = create_loss("dice_ce", num_classes=C, lambda_ce=0.3, lambda_dice=0.7, **options)
    close(mine(logits, target), expected)
    assert not torch.isclose(
        mine(logits, target),
        create_loss("dice_ce", num_classes=C, lambda_ce=0.3, lambda_dice=0.7)(logits, target),
    )


# --- sum (composite) ------------------------------------------------------------------------------------


def test_sum_is_the_weighted_sum_of_its_terms_with_their_own_params_value_and_gradient():
    logits, target = batch(0.2)
    terms = [
        {"name": "lovasz", "weight": 0.7, "params": {"classes": "all"}},
        {"name": "focal", "weight": 0.3, "params": {"gamma": 1.0}},
        {"name": "dice", "params": {"batch": False}},  # weight 1 when left out
    ]
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    mine = create_loss("sum", num_classes=C, terms=terms)(a, target)
    expected = (
        0.7 * create_loss("lovasz", num_classes=C, classes="all")(b, target)
        + 0.3 * create_loss("focal", num_classes=C, gamma=1.0)(b, target)
        + create_loss("dice", num_classes=C, batch=False)(b, target)
    )
    mine.backward(), expected.backward()
    close(mine, expected.detach())
    torch.testing.assert_close(a.grad, b.grad)


def test_sum_passes_each_term_its_own_inputs_and_slice_of_the_aux_head():
    logits, target = batch(0.2)
    terms = [
        {"name": "boundary_aware", "params": {"truncation": 3.0}},
        {"name": "ce", "weight": 0.5},
        {"name": "boundary", "weight": 2.0},
        {"name": "boundary_aware", "weight": 0.25},
    ]
    info = loss_info("sum", {"terms": terms})
    assert info.inputs == ("aux", "progress")
    k = loss_info("boundary_aware").num_aux_channels(C)
    assert info.num_aux_channels(C) == 2 * k
    assert loss_info("sum").inputs == () and loss_info("sum").num_aux_channels(C) == 0  # lovasz + ce
    aux = torch.randn(B, 2 * k, H, W)
    mine = create_loss("sum", num_classes=C, terms=terms)(logits, target, aux=aux, progress=0.3)
    expected = (
        create_loss("boundary_aware", num_classes=C, truncation=3.0)(logits, target, aux=aux[:, :k])
        + 0.5 * create_loss("ce", num_classes=C)(logits, target)
        + 2.0 * create_loss("boundary", num_classes=C)(logits, target, progress=0.3)
        + 0.25 * create_loss("boundary_aware", num_classes=C)(logits, target, aux=aux[:, k:])
    )
    close(mine, expected)


def test_sum_uses_the_ignore_index_it_is_given():
    logits, target = batch(0.3)
    other = torch.where(target == 255, -1, target)
    mine = create_loss("sum", num_classes=C, ignore_index=-1)(logits, other)
    close(mine, create_loss("sum", num_classes=C)(logits, target))


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ([], r"terms=\[\] must be a non-empty list"),
        ({"name": "ce"}, "must be a non-empty list"),
        ([{"name": "lovaz"}], r"terms\[0\]\.name='lovaz' is not a registered loss"),
        (
            [{"name": "ce"}, {"name": "ce", "weight": -1}],
            r"terms\[1\]\.weight=-1 must be a finite number >= 0",
        ),
        ([{"name": "ce", "wieght": 1}], r"terms\[0\] has unknown key\(s\) \['wieght'\]"),
        ([{"name": "ce", "params": 3}], r"terms\[0\]\.params=3 must be a mapping"),
        (
            [{"name": "ce"}, {"name": "lovasz", "params": {"classes": "most"}}],
            r"terms\[1\] \(lovasz\).*classes='most'.*set loss\.params\.terms\[1\]\.params\.classes",
        ),
        ([{"name": "dice", "params": {"gamma": 2}}], r"terms\[0\] \(dice\).*\['gamma'\]"),
    ],
)
def test_sum_rejects_bad_terms_naming_the_term_and_field(terms, message):
    with pytest.raises(ValueError, match=message):
        create_loss("sum", num_classes=C, terms=terms)


@pytest.mark.slow
def test_sum_trains_end_to_end_from_the_command_line_and_sweeps(tmp_path):
    """Two composites in one ``-m`` sweep, one needing an aux head and the training progress."""
    aux_terms = ["{name: boundary_aware, weight: 1}", "{name: dice, weight: 0.5, params: {batch: false}}"]
    with_aux = "[" + ", ".join([*aux_terms, "{name: boundary}"]) + "]"
    res = bench_cli(
        "-m",
        "+loss=sum",
        "+data=synthetic",
        "+debug=synthetic",
        "trainer.max_steps=2",
        f"loss.params.terms={with_aux},[{{name: lovasz}}, {{name: ce, weight: 2}}]",
        tmp=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    recs = list(records(tmp_path / "out").values())
    assert len(recs) == 2 and all(r["status"] == "completed" for r in recs), [r.get("error") for r in recs]
    terms = sorted([t["name"] for t in r["config"]["loss"]["params"]["terms"]] for r in recs)
    assert terms == [["boundary_aware", "dice", "boundary"], ["lovasz", "ce"]]
    for r in recs:
        losses_seen = [h["train/loss"] for h in r["history"]["train"]]
        assert losses_seen and all(np.isfinite(losses_seen))
