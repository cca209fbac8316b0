"""Advanced region losses and clDice: reference-library oracles, NumPy transcriptions, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import GeneralizedWassersteinDiceLoss
from monai.losses.cldice import soft_skel
from scipy.special import gammaln
from segmentation_models_pytorch.losses import LovaszLoss
from segmentation_models_pytorch.losses.lovasz import _lovasz_softmax

from losses import create_loss
from losses.cldice import binary_skeleton, soft_skeleton
from losses.lovasz import lovasz_grad

IGNORE = 255


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def sample(b: int, c: int, h: int, w: int, ignored: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    logits = 2 * torch.randn(b, c, h, w)
    target = torch.randint(0, c, (b, h, w))
    return logits, torch.where(torch.rand(b, h, w) < ignored, IGNORE, target)


def one_hot(target: torch.Tensor, c: int) -> torch.Tensor:
    return F.one_hot(target, c).permute(0, 3, 1, 2).float()


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def np_one_hot(target: np.ndarray, c: int) -> np.ndarray:
    """``[B,C,H,W]`` float64 one-hot; ignored pixels all zero."""
    return (target[:, None] == np.arange(c)[None, :, None, None]).astype(np.float64)


# --------------------------------------------------------------------------- Wasserstein Dice

DIST = [[0, 1, 1, 1], [1, 0, 0.5, 0.7], [1, 0.5, 0, 0.2], [1, 0.7, 0.2, 0]]


@pytest.mark.parametrize("dist", [None, DIST])
def test_wasserstein_dice_matches_monai_default_weighting(dist):
    logits, target = sample(3, 4, 9, 11, ignored=0)
    m = np.array(DIST if dist else 1 - np.eye(4), dtype=np.float32)
    ours = create_loss("wasserstein_dice", num_classes=4, dist_matrix=dist)(logits, target)
    reference = GeneralizedWassersteinDiceLoss(m, weighting_mode="default")(logits, target)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_wasserstein_dice_batch_mode_scores_the_batch_as_one_image():
    logits, target = sample(2, 4, 8, 8, ignored=0)
    ours = create_loss("wasserstein_dice", num_classes=4, dist_matrix=DIST, batch=True)(logits, target)
    side_by_side = GeneralizedWassersteinDiceLoss(np.array(DIST, dtype=np.float32))(
        torch.cat(logits.unbind(0), -1)[None], torch.cat(target.unbind(0), -1)[None]
    )
    torch.testing.assert_close(ours, side_by_side, rtol=1e-5, atol=1e-6)


def test_wasserstein_dice_penalises_confusing_close_classes_less():
    target = torch.full((1, 6, 6), 1)
    loss = create_loss("wasserstein_dice", num_classes=4, dist_matrix=DIST)
    near = loss(10 * one_hot(torch.full_like(target, 2), 4), target)  # M[1,2] = 0.5
    far = loss(10 * one_hot(torch.full_like(target, 3), 4), target)  # M[1,3] = 0.7
    assert loss(10 * one_hot(target, 4), target) < 1e-4 < near < far


def test_wasserstein_dice_leaves_fully_ignored_images_out_of_the_mean():
    logits, target = sample(2, 4, 8, 8)
    loss = create_loss("wasserstein_dice", num_classes=4)
    target[1] = IGNORE
    torch.testing.assert_close(loss(logits, target), loss(logits[:1], target[:1]))


@pytest.mark.parametrize(
    ("dist", "message"),
    [
        ([[0, 1], [1, 0]], r"shape \(2, 2\), expected \(3, 3\)"),
        ([[0, 1, -1], [1, 0, 1], [-1, 1, 0]], "non-negative"),
        ([[1, 1, 1], [1, 0, 1], [1, 1, 0]], "zero diagonal"),
        ([[0, 1, 1], [0.5, 0, 1], [1, 1, 0]], "symmetric"),
        ([[0, "a", 1], [1, 0, 1], [1, 1, 0]], "list of 3 rows of 3 numbers"),
        (1.0, "list of 3 rows"),
    ],
)
def test_wasserstein_dice_rejects_an_invalid_distance_matrix_by_name(dist, message):
    with pytest.raises(ValueError, match=f"dist_matrix.*{message}"):
        create_loss("wasserstein_dice", num_classes=3, dist_matrix=dist)


# --------------------------------------------------------------------------- Lovász-Softmax


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_smp_value_and_gradient(per_image):
    logits, target = sample(3, 5, 9, 10)
    ours_in, smp_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = create_loss("lovasz", num_classes=5, batch=not per_image)(ours_in, target)
    reference = LovaszLoss("multiclass", per_image=per_image, ignore_index=IGNORE)(smp_in, target)
    ours.backward(), reference.backward()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_in.grad, smp_in.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_all_classes_matches_the_reference_code(per_image):
    logits, target = sample(2, 5, 8, 8)
    target = torch.where(target == 4, 3, target)  # class 4 absent: "all" charges it, "present" does not
    ours = create_loss("lovasz", num_classes=5, batch=not per_image, classes="all")(logits, target)
    reference = _lovasz_softmax(logits.softmax(1), target, classes="all", per_image=per_image, ignore=IGNORE)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_lovasz_with_one_valid_pixel_is_one_minus_its_probability():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.full((2, 4, 4), IGNORE)
    target[1, 2, 3] = 2
    value = create_loss("lovasz", num_classes=3)(logits, target)
    torch.testing.assert_close(value, 1 - logits.softmax(1)[1, 2, 2, 3])


def test_lovasz_gradient_counts_exactly_beyond_2_pow_24_pixels():
    n = 2**24 + 8
    fg = torch.zeros(n, dtype=torch.bool)
    fg[-4:] = True  # four foreground pixels with the smallest errors
    grad = lovasz_grad(fg)
    # exact: from position n-5 on the union is n, so each foreground pixel adds 1/n to the Jaccard loss
    np.testing.assert_allclose(grad[-4:].numpy(), np.full(4, 1 / n), rtol=1e-9)
    assert grad[n - 5].item() == pytest.approx(4 / (n - 1) - 4 / n, rel=1e-5)  # float32: 0
    assert grad.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_lovasz_rejects_an_unknown_class_mode():
    with pytest.raises(ValueError, match="classes='some'"):
        create_loss("lovasz", num_classes=3, classes="some")


# --------------------------------------------------------------------------- RMI


def np_rmi(logits, target, c, radius=3, pool=3, kind="max", lam=0.5, activation="sigmoid", alpha=5e-4):
    """Transcription of the documented RMI with explicit windows and NumPy linear algebra."""
    x, t = logits.double().numpy(), target.numpy()
    valid = t != IGNORE
    y = np_one_hot(t, c)
    if activation == "sigmoid":
        p = 1 / (1 + np.exp(-x))
        bce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
        pixel = bce.sum(1)[valid].mean()
    else:
        p = np_softmax(x)
        pixel = -np.log(np.take_along_axis(p, np.where(valid, t, 0)[:, None], 1)[:, 0])[valid].mean()
    b, _, h, w = x.shape
    pad = pool // 2
    hp, wp = (h + 2 * pad - pool) // pool + 1, (w + 2 * pad - pool) // pool + 1

    def down(a):
        """Pool each cell with ignored and padded pixels as 0 (avg: sum / pool²) and flag the cells
        with a valid pixel."""
        out, cell = np.zeros((b, c, hp, wp)), np.zeros((b, hp, wp), dtype=bool)
        for i in range(hp):
            for j in range(wp):
                rows = slice(max(i * pool - pad, 0), i * pool - pad + pool)
                cols = slice(max(j * pool - pad, 0), j * pool - pad + pool)
                win, m = a[:, :, rows, cols], valid[:, None, rows, cols]
                cell[:, i, j] = m.any((1, 2, 3))
                if kind == "max":
                    out[:, :, i, j] = np.where(m, win, 0).max((2, 3))
                else:
                    out[:, :, i, j] = (win * m).sum((2, 3)) / pool**2  # official: zeros count
        return out, cell

    (yl, cell), (pl, _) = down(y), down(p)
    d, total, images = radius * radius, np.zeros(c), np.zeros(c)
    for bi in range(b):
        points = [
            (i, j)
            for i in range(hp - radius + 1)
            for j in range(wp - radius + 1)
            if cell[bi, i : i + radius, j : j + radius].all()
        ]
        if not points:
            continue
        for ci in range(c):
            vy = np.array([yl[bi, ci, i : i + radius, j : j + radius].ravel() for i, j in points]).T
            vp = np.array([pl[bi, ci, i : i + radius, j : j + radius].ravel() for i, j in points]).T
            vy, vp = vy - vy.mean(1, keepdims=True), vp - vp.mean(1, keepdims=True)
            s_yp = vy @ vp.T
            cond = vy @ vy.T - s_yp @ np.linalg.inv(vp @ vp.T + alpha * np.eye(d)) @ s_yp.T
            total[ci] += 0.5 * (np.linalg.slogdet(cond + alpha * np.eye(d))[1] - d * math.log(alpha)) / d
            images[ci] += 1
    return lam * pixel + (1 - lam) * (total / np.maximum(images, 1)).sum()


@pytest.mark.parametrize(
    "options",
    [{}, {"activation": "softmax"}, {"pool": "avg", "pool_size": 2}, {"radius": 2, "ce_weight": 0.2}],
)
def test_rmi_matches_a_numpy_transcription_with_ignored_pixels(options):
    logits, target = sample(2, 3, 17, 20)
    target[0, :6] = IGNORE  # whole pooled cells and points drop out
    target[1] = torch.where(torch.rand(17, 20) < 0.5, IGNORE, target[1])
    ours = create_loss("rmi", num_classes=3, **options)(logits, target)
    expected = np_rmi(
        logits,
        target,
        3,
        radius=options.get("radius", 3),
        pool=options.get("pool_size", 3),
        kind=options.get("pool", "max"),
        lam=options.get("ce_weight", 0.5),
        activation=options.get("activation", "sigmoid"),
    )
    assert ours.item() == pytest.approx(expected, rel=1e-5)


def test_rmi_stays_exact_for_a_confident_prediction():
    # float32 Gram matrices are too coarse for α = 5e-4 on sums over 1849 points: this case then
    # gives 0.576 instead of 0.693 (and NaN at larger sizes)
    target = torch.randint(0, 4, (1, 16, 16)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    logits = 30 * one_hot(target, 4) - 15 + 0.3 * torch.randn(1, 4, 128, 128)
    loss = create_loss("rmi", num_classes=4)
    x32, x64 = logits.clone().requires_grad_(), logits.double().requires_grad_()
    value, exact = loss(x32, target), loss(x64, target)
    value.backward(), exact.backward()
    assert value.item() == pytest.approx(exact.item(), rel=1e-5)
    assert torch.isfinite(x32.grad).all()


def test_rmi_memory_stays_a_few_logits_for_19_classes_at_256x512():
    logits = torch.randn(1, 19, 256, 512, requires_grad=True)
    target = torch.randint(0, 19, (1, 256, 512))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = create_loss("rmi", num_classes=19)(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert sum(storages.values()) <= 8 * logits.nbytes


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"radius": 2.5}, "radius=2.5 must be an integer"),
        ({"pool": "median"}, "pool='median'"),
        ({"activation": "relu"}, "activation='relu'"),
    ],
)
def test_rmi_rejects_invalid_options_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        create_loss("rmi", num_classes=3, **options)


def test_rmi_explains_an_input_too_small_for_its_neighbourhoods():
    with pytest.raises(ValueError, match="smaller than radius=3"):
        create_loss("rmi", num_classes=2)(torch.randn(1, 2, 6, 6), torch.zeros(1, 6, 6, dtype=torch.long))


# --------------------------------------------------------------------------- Robust T-Loss


def np_tloss(logits, target, c, nu, lam=1.0):
    x, t = logits.double().numpy(), target.numpy()
    valid = t != IGNORE
    delta = (np_softmax(x) - np_one_hot(t, c)) * valid[:, None]
    sq, d = (delta**2).sum((2, 3)), valid.sum((1, 2))[:, None].astype(np.float64)
    nll = (
        gammaln(nu / 2)
        - gammaln((nu + d) / 2)
        + d / 2 * (np.log(np.pi * nu) - lam)
        + (nu + d) / 2 * np.log1p(np.exp(lam) * sq / nu)
    )
    return nll.sum() / (c * d.sum())


@pytest.mark.parametrize(("nu", "lam"), [(math.e, 1.0), (0.3, 0.0), (50.0, 2.0)])
def test_t_loss_matches_a_numpy_transcription(nu, lam):
    logits, target = sample(2, 3, 8, 9)
    loss = create_loss("t_loss", num_classes=3, nu_init=nu, log_precision=lam)
    assert loss(logits, target).item() == pytest.approx(np_tloss(logits, target, 3, nu + 1e-8, lam), rel=1e-5)


def test_t_loss_for_two_classes_is_the_authors_binary_loss_per_pixel():
    logits, target = sample(3, 2, 8, 8, ignored=0)
    theta, eps, d = 1.0, 1e-8, 64
    nu = math.exp(theta) + eps
    delta = logits.softmax(1)[:, 1].double().numpy() - target.numpy()
    sixth = (nu + d) / 2 * np.log1p((delta**2 * math.exp(1 + eps)).sum((1, 2)) / nu)
    authors = -gammaln((nu + d) / 2) + gammaln(nu / 2) - d * (1 + eps) / 2 + d / 2 * math.log(math.pi)
    authors = (authors + d / 2 * (theta + eps) + sixth).mean()  # their TLoss(config, nu=1.0), mean over batch
    assert create_loss("t_loss", num_classes=2)(logits, target).item() == pytest.approx(authors / d, rel=1e-6)


def test_t_loss_tends_to_the_gaussian_likelihood_for_large_nu():
    logits, target = sample(2, 3, 8, 8)
    valid = (target != IGNORE).numpy()
    delta = (np_softmax(logits.double().numpy()) - np_one_hot(target.numpy(), 3)) * valid[:, None]
    n = 3 * valid.sum()
    gaussian = (n / 2 * (math.log(2 * math.pi) - 1.0) + math.e / 2 * (delta**2).sum()) / n
    value = create_loss("t_loss", num_classes=3, nu_init=1e7)(logits, target)
    assert value.item() == pytest.approx(gaussian, rel=1e-4)


def test_t_loss_learns_nu_through_its_parameter():
    logits, target = sample(2, 3, 8, 8)
    loss = create_loss("t_loss", num_classes=3)
    assert loss.nu.item() == pytest.approx(math.e)
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    loss(logits, target).backward()
    assert loss.log_nu.grad is not None and loss.log_nu.grad.abs() > 0
    opt.step()
    assert loss.nu.item() != pytest.approx(math.e) and loss.nu.item() > 0


# --------------------------------------------------------------------------- clDice


def np_skeleton(a: np.ndarray, iterations: int) -> np.ndarray:
    """The authors' soft_skel in NumPy (erosion recomputed as they do)."""
    h, w = a.shape[-2:]

    def erode(x):
        p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=np.inf)
        vertical = np.minimum(np.minimum(p[..., :-2, 1:-1], p[..., 1:-1, 1:-1]), p[..., 2:, 1:-1])
        horizontal = np.minimum(np.minimum(p[..., 1:-1, :-2], p[..., 1:-1, 1:-1]), p[..., 1:-1, 2:])
        return np.minimum(vertical, horizontal)

    def dilate(x):
        p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        return np.max([p[..., i : i + h, j : j + w] for i in range(3) for j in range(3)], 0)

    skel = np.maximum(a - dilate(erode(a)), 0)
    for _ in range(iterations):
        a = erode(a)
        delta = np.maximum(a - dilate(erode(a)), 0)
        skel = skel + np.maximum(delta - skel * delta, 0)
    return skel


def np_cldice(logits, target, c, alpha=0.5, iterations=10, smooth=1.0, batch=True, first=0):
    valid = (target != IGNORE).numpy()[:, None]
    p, t = np_softmax(logits.double().numpy()) * valid, np_one_hot(target.numpy(), c)
    sp, st = np_skeleton(p, iterations), np_skeleton(t, iterations)
    dims = (0, 2, 3) if batch else (2, 3)
    tprec = ((sp * t).sum(dims) + smooth) / (sp.sum(dims) + smooth)
    tsens = ((st * p).sum(dims) + smooth) / (st.sum(dims) + smooth)
    cl = 2 * tprec * tsens / (tprec + tsens)
    dice = (2 * (p * t).sum(dims) + smooth) / (p.sum(dims) + t.sum(dims) + smooth)
    return ((1 - alpha) * (1 - dice) + alpha * (1 - cl))[..., first:].mean()


def test_soft_skeleton_matches_the_authors_code_via_monai():
    maps = torch.cat([torch.rand(2, 3, 20, 25), (torch.rand(2, 3, 20, 25) > 0.4).float()])
    for iterations in (0, 1, 3, 5, 10):
        torch.testing.assert_close(soft_skeleton(maps, iterations), soft_skel(maps, iterations))


def test_binary_skeleton_equals_the_soft_skeleton_of_a_binary_map():
    masks = torch.rand(2, 3, 20, 25) > 0.3
    masks[0, 0, 4:14, 3:20] = True  # a thick blob needs several rounds
    for iterations in (0, 1, 3, 10):
        torch.testing.assert_close(
            binary_skeleton(masks, iterations).float(), soft_skeleton(masks.float(), iterations)
        )


@pytest.mark.parametrize(
    "options",
    [{}, {"batch": False}, {"include_background": False, "alpha": 0.3}, {"iterations": 5, "smooth": 0.1}],
)
def test_cldice_matches_a_numpy_transcription(options):
    logits, target = sample(2, 3, 16, 18)
    ours = create_loss("cldice", num_classes=3, **options)(logits, target)
    expected = np_cldice(
        logits,
        target,
        3,
        alpha=options.get("alpha", 0.5),
        iterations=options.get("iterations", 10),
        smooth=options.get("smooth", 1.0),
        batch=options.get("batch", True),
        first=0 if options.get("include_background", True) else 1,
    )
    assert ours.item() == pytest.approx(expected, rel=1e-5)


def test_cldice_scores_a_broken_vessel_worse_than_a_shaved_blob_at_equal_dice():
    target = torch.zeros(1, 24, 24, dtype=torch.long)
    target[0, 8:15, 2:9] = 1  # a 7×7 blob
    target[0, 11, 9:22] = 1  # and a one-pixel vessel leaving it
    broken, shaved = target.clone(), target.clone()
    broken[0, 11, 15:17] = 0  # two pixels cut out of the vessel: disconnected
    shaved[0, 8, 2:4] = 0  # two pixels off the blob's corner: same Dice, same topology
    broken, shaved = 20 * one_hot(broken, 2), 20 * one_hot(shaved, 2)
    dice_only = create_loss("cldice", num_classes=2, alpha=0.0)
    torch.testing.assert_close(dice_only(broken, target), dice_only(shaved, target))
    loss = create_loss("cldice", num_classes=2)
    assert loss(broken, target) > 2 * loss(shaved, target)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"iterations": 2.0}, "iterations=2.0 must be an integer"), ({"smooth": 0.0}, "smooth=0.0 must be > 0")],
)
def test_cldice_rejects_invalid_options_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        create_loss("cldice", num_classes=3, **options)


def test_lovasz_row_sort_equals_a_stable_batched_sort_with_ties():
    from losses.lovasz import sort_rows

    g = torch.Generator().manual_seed(3)
    keys = torch.randint(0, 7, (5, 300), generator=g, dtype=torch.int32)  # many ties
    values, indices = sort_rows(keys)
    expected = keys.sort(dim=-1, stable=True)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size", [2, 3, 4])
def test_rmi_labels_pooled_from_indices_equal_the_pooled_one_hot(kind, size):
    from losses.rmi import pool_labels, pool_masked

    g = torch.Generator().manual_seed(size)
    target = torch.randint(0, 4, (2, 13, 17), generator=g)
    target[torch.rand(2, 13, 17, generator=g) < 0.2] = 255
    valid = target != 255
    onehot = F.one_hot(torch.where(valid, target, 0), 4).permute(0, 3, 1, 2).float()
    onehot = onehot * valid.unsqueeze(1)
    expected = pool_masked(onehot, valid.unsqueeze(1).float(), size, kind)
    assert torch.allclose(pool_labels(target, valid, 4, size, kind), expected, atol=1e-7)
