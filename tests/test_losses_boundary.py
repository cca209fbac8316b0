"""Boundary-level losses and DMCE against NumPy/loop transcriptions of their definitions and MONAI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import HausdorffDTLoss as MonaiHausdorffDTLoss
from scipy import ndimage

from losses import create_loss
from losses.distance import label_distance
from losses.inverseform import InverseNet, edge_target, random_affine, tiles, warp
from losses.region import GeneralizedDiceLoss

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def edt(mask: np.ndarray) -> np.ndarray:
    return ndimage.distance_transform_edt(mask)


def blobs(b: int, h: int, w: int, classes: int, regions: int = 8, seed: int = 0) -> torch.Tensor:
    """``[b,h,w]`` int64 Voronoi label maps: regions of several pixels, many boundaries."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(b):
        seeds = rng.random((regions, 2)) * (h, w)
        yy, xx = np.mgrid[:h, :w]
        nearest = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(-1)
        out.append(rng.integers(0, classes, regions)[nearest])
    return torch.from_numpy(np.stack(out))


def noisy_logits(target: torch.Tensor, classes: int, margin: float = 3.0) -> torch.Tensor:
    """Logits favouring ``target`` (class 0 at ignored pixels) plus unit noise."""
    safe = torch.where(target == 255, 0, target)
    return margin * F.one_hot(safe, classes).permute(0, 3, 1, 2).float() + torch.randn(
        target.shape[0], classes, *target.shape[1:]
    )


def masked_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = target != 255
    ce = F.cross_entropy(logits, torch.where(valid, target, 0), reduction="none")
    return (ce * valid).sum() / valid.sum()


# --- dmce -------------------------------------------------------------------------------------------


def dmce_reference(logits: torch.Tensor, target: torch.Tensor, decay: float) -> float:
    lab, logp = target.numpy(), logits.log_softmax(1).numpy()
    total, count = 0.0, 0
    for b in range(lab.shape[0]):
        for c in np.unique(lab[b]):
            if c == 255:
                continue
            m = lab[b] == c
            d = edt(m)[m]
            phi = (1 - (d - 1) / max(d.max() - 1, 1)) ** decay
            total += ((1 + phi) * -logp[b, c][m]).sum()
            count += m.sum()
    return total / count


@pytest.mark.parametrize("decay", [1.0, 2.5])
def test_dmce_matches_a_numpy_transcription(decay):
    target = blobs(2, 24, 30, 4)
    target[0, :3] = 255
    logits = noisy_logits(target, 4)
    loss = create_loss("dmce", num_classes=4, decay=decay)
    assert loss(logits, target).item() == pytest.approx(dmce_reference(logits, target, decay), rel=1e-5)


def test_dmce_weighs_the_rim_twice_and_the_deepest_pixel_once():
    target = torch.zeros(1, 9, 9, dtype=torch.long)
    target[0, 2:7, 2:7] = 1  # a 5×5 square: rim d=1, centre d=3
    logits = torch.zeros(1, 2, 9, 9, requires_grad=True)
    create_loss("dmce", num_classes=2)(logits, target).backward()
    g = logits.grad[0, 1].abs()
    assert g[2, 2] == pytest.approx(2 * g[4, 4].item()), "rim weight 2 vs centre weight 1"
    assert g[3, 3] == pytest.approx(1.5 * g[4, 4].item())


# --- boundary ---------------------------------------------------------------------------------------


def kervadec_maps(target: np.ndarray, classes: int) -> np.ndarray:
    out = np.zeros((target.shape[0], classes, *target.shape[1:]))
    for b, lab in enumerate(target):
        for c in range(classes):
            pos = lab == c
            if pos.any():
                out[b, c] = edt(~pos) * ~pos - (edt(pos) - 1) * pos
    return out


@pytest.mark.parametrize("progress", [0.0, 0.37, 1.0])
def test_boundary_loss_is_scheduled_gdl_plus_kervadec_surface_loss(progress):
    target = blobs(2, 20, 26, 3)
    logits = noisy_logits(target, 3)
    p = logits.softmax(1).numpy()
    surface = (p * kervadec_maps(target.numpy(), 3)).mean()  # Kervadec's SurfaceLoss: einsum(...).mean()
    gdl = GeneralizedDiceLoss(3, batch=False)(logits, target).item()
    w_region, w_boundary = max(0.1, 1 - progress), 0.01 + progress
    got = create_loss("boundary", num_classes=3)(logits, target, progress=progress).item()
    assert got == pytest.approx(w_region * gdl + w_boundary * surface, rel=1e-5)


def test_boundary_schedule_follows_the_authors_steal_weight_per_epoch():
    loss = create_loss("boundary", num_classes=3)
    for epoch in (0, 1, 50, 89, 95, 100):  # StealWeight(0.01) over 100 epochs, from weights (1, 0.01)
        w_region, w_boundary = loss.weights(epoch / 100)
        assert w_region == pytest.approx(max(0.1, 1 - 0.01 * epoch))
        assert w_boundary == pytest.approx(0.01 + 0.01 * epoch)
    assert create_loss("boundary", num_classes=3, rate=0.0).weights(0.8) == (1.0, 0.01)


def test_boundary_rejects_bad_progress_and_region():
    target = blobs(1, 8, 8, 2)
    with pytest.raises(ValueError, match="progress"):
        create_loss("boundary", num_classes=2)(torch.randn(1, 2, 8, 8), target, progress=1.5)
    with pytest.raises(ValueError, match="region"):
        create_loss("boundary", num_classes=2, region="tversky")


# --- hausdorff --------------------------------------------------------------------------------------


@pytest.mark.parametrize("include_background", [True, False])
def test_hausdorff_equals_monai_hausdorff_dt_loss(include_background):
    target = blobs(3, 28, 32, 4, seed=1)
    logits = noisy_logits(blobs(3, 28, 32, 4, seed=2), 4, margin=2.0)  # a different, confident-ish map
    ours = create_loss("hausdorff", num_classes=4, dice_weight=0.0, include_background=include_background)
    monai = MonaiHausdorffDTLoss(
        alpha=2.0, include_background=include_background, to_onehot_y=True, softmax=True
    )
    expected = monai(logits, target[:, None]).item()
    assert ours(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_hausdorff_adaptive_dice_weight_makes_both_terms_equal_and_only_learns_in_training():
    target = blobs(2, 16, 16, 3)
    logits = noisy_logits(target, 3, margin=1.0)
    loss = create_loss("hausdorff", num_classes=3)
    hd = loss.hd_term(logits, target).item()
    assert loss(logits, target).item() == pytest.approx(2 * hd, rel=1e-5), "λ = HD / Dice after one step"
    running = loss.running.clone()
    loss.eval()
    loss(noisy_logits(target, 3, margin=0.5), target)
    torch.testing.assert_close(loss.running, running)
    dice = create_loss("dice", num_classes=3)(logits, target).item()
    fixed = create_loss("hausdorff", num_classes=3, dice_weight=0.5)(logits, target).item()
    assert fixed == pytest.approx(hd + 0.5 * dice, rel=1e-5)


# --- boundary_aware ---------------------------------------------------------------------------------


@pytest.mark.parametrize("truncation", [5.0, 8.0])
def test_boundary_aware_bins_quantise_the_truncated_inside_distance(truncation):
    target = blobs(2, 30, 30, 3, regions=5)
    loss = create_loss("boundary_aware", num_classes=3, truncation=truncation)
    expected = np.zeros(target.shape, np.int64)
    for b, lab in enumerate(target.numpy()):
        for c in np.unique(lab):
            m = lab == c
            d = np.minimum(np.ceil(edt(m)[m]), truncation)
            expected[b][m] = np.ceil(d * 5 / truncation) - 1
    np.testing.assert_array_equal(loss.distance_bins(target).numpy(), expected)
    assert expected.max() == 4


def test_boundary_aware_is_ce_plus_summed_binary_ces_and_checks_aux_shape():
    target = blobs(2, 12, 12, 3)
    target[1, :2] = 255
    logits, aux = noisy_logits(target, 3), torch.randn(2, 5, 12, 12)
    loss = create_loss("boundary_aware", num_classes=3, weight=0.7)
    bins = F.one_hot(loss.distance_bins(target), 5).permute(0, 3, 1, 2).float()
    valid = target != 255
    bce = F.binary_cross_entropy_with_logits(aux, bins, reduction="none").sum(1)
    expected = masked_ce(logits, target) + 0.7 * (bce * valid).sum() / valid.sum()
    assert loss(logits, target, aux=aux).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="aux"):
        loss(logits, target, aux=torch.randn(2, 3, 12, 12))


# --- active_boundary --------------------------------------------------------------------------------

# the value and gradient against the authors' abl.py: tests/test_loss_reference.py


def test_active_boundary_without_predicted_boundary_is_plain_ce():
    target = blobs(2, 12, 12, 3)
    logits = torch.randn(1, 3, 1, 1).expand(2, 3, 12, 12).contiguous()  # same distribution everywhere
    value = create_loss("active_boundary", num_classes=3)(logits, target)
    assert value.item() == pytest.approx(masked_ce(logits, target).item(), rel=1e-6)


def test_active_boundary_keeps_the_top_kl_pixels_and_dilates_them_by_3x3():
    logp = torch.zeros(1, 3, 20, 20)
    logp[0, 0, 5, 5] = 1.0  # one odd pixel: its KL to both neighbours is the largest value
    logp = logp.log_softmax(1)
    valid = torch.ones(1, 20, 20, dtype=torch.bool)
    one = create_loss("active_boundary", num_classes=3, boundary_ratio=0.003)  # keeps 1 of 400
    expected = torch.zeros(1, 20, 20, dtype=torch.bool)
    expected[0, 4:7, 4:7] = True
    torch.testing.assert_close(one.predicted_boundary(logp, valid), expected)
    flat = torch.zeros(1, 3, 20, 20).log_softmax(1)
    assert not one.predicted_boundary(flat, valid).any(), "KL ≤ 1e-5 is never a boundary"


# --- inverseform ------------------------------------------------------------------------------------


def load_script():
    spec = importlib.util.spec_from_file_location(
        "train_inverseform", ROOT / "scripts" / "train_inverseform.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """Tiny MLP training is fastest single-threaded on a shared machine; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_inverseform_without_checkpoint_says_how_to_train_one(tmp_path):
    with pytest.raises(ValueError, match=r"train_inverseform\.py"):
        create_loss("inverseform", num_classes=3)
    with pytest.raises(FileNotFoundError, match=r"train_inverseform\.py"):
        create_loss("inverseform", num_classes=3, checkpoint=str(tmp_path / "missing.pt"))
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an InverseNet checkpoint"):
        create_loss("inverseform", num_classes=3, checkpoint=str(tmp_path / "other.pt"))


def test_tiny_inversenet_recovers_affines_better_than_the_identity(one_thread):
    script = load_script()
    net = script.train_inversenet(steps=250, patch=32, hidden=(128, 32), batch=32, lr=1e-3, seed=0)
    error, identity_error = script.affine_errors(net, n=128, seed=1)
    assert error < 0.85 * identity_error, f"|θ̂ − θ| {error:.4f} vs |I − θ| {identity_error:.4f}"


def test_training_script_writes_a_checkpoint_the_loss_loads(tmp_path, one_thread):
    out = tmp_path / "inversenet.pt"
    load_script().main(["--out", str(out), "--steps", "2", "--patch", "8", "--hidden", "16", "--batch", "4"])
    loss = create_loss("inverseform", num_classes=3, checkpoint=str(out))
    assert loss.inverse_net.patch == 8 and not list(loss.parameters()), "frozen weights are buffers"


def test_edges_are_pixels_within_the_radius_of_another_label():
    target = blobs(2, 20, 24, 3)
    target[0, :3] = 255
    for radius in (1.0, 2.0, 2.5):
        expected = (label_distance(target) <= radius).float()
        torch.testing.assert_close(edge_target(target, radius), expected)


def test_tiles_cut_resized_maps_into_row_major_patches():
    maps = torch.arange(2 * 16 * 24, dtype=torch.float32).view(2, 1, 16, 24)
    patches = tiles(maps, 8)
    assert patches.shape == (12, 8, 8)
    torch.testing.assert_close(patches[4], maps[0, 0, 8:16, 8:16])
    assert tiles(torch.rand(1, 1, 10, 17), 8).shape == (6, 8, 8), "2 × 3 patches after resizing"


def test_warp_with_the_identity_is_exact_and_random_affines_are_near_it():
    edges = torch.rand(3, 1, 8, 8)
    identity = torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3)
    torch.testing.assert_close(warp(edges, identity), edges)
    theta = random_affine(500, torch.Generator().manual_seed(0))
    assert (theta - identity[:1]).abs().amax() < 0.3


def test_inverseform_is_ce_plus_balanced_bce_plus_inverse_distance(tmp_path):
    torch.save(InverseNet(patch=8, hidden=(16,)).checkpoint(), tmp_path / "net.pt")
    loss = create_loss("inverseform", num_classes=3, checkpoint=str(tmp_path / "net.pt"))
    target = blobs(2, 16, 16, 3)
    target[1, :, :3] = 255
    logits, aux = noisy_logits(target, 3), torch.randn(2, 1, 16, 16)
    valid = (target != 255).float()
    gt = edge_target(target) * valid
    pos, n = gt.sum(), valid.sum()
    weight = torch.where(gt > 0, (n - pos) / n, pos / n)
    bce = (F.binary_cross_entropy_with_logits(aux[:, 0], gt, reduction="none") * weight * valid).sum() / n
    offsets = loss.inverse_net(tiles(torch.sigmoid(aux) * valid[:, None], 8), tiles(gt[:, None], 8))
    l_if = offsets.norm(dim=1).mean()  # every 8×8 patch has valid pixels
    expected = masked_ce(logits, target) + 0.3 * bce + 0.3 * l_if
    assert loss(logits, target, aux=aux).item() == pytest.approx(expected.item(), rel=1e-5)


# --- conditional_boundary ---------------------------------------------------------------------------


# the value and gradient against the authors' CBL code: tests/test_loss_reference.py


def test_conditional_boundary_vanishes_for_label_aligned_features_and_perfect_logits():
    target = blobs(2, 12, 12, 3)
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    loss = create_loss("conditional_boundary", num_classes=3)
    assert loss(20 * onehot, target, features=onehot).item() < 1e-6


def test_conditional_boundary_accepts_lower_resolution_features():
    target = blobs(2, 16, 16, 3)
    feats = torch.randn(2, 4, 8, 8, requires_grad=True)
    value = create_loss("conditional_boundary", num_classes=3)(
        noisy_logits(target, 3), target, features=feats
    )
    value.backward()
    assert torch.isfinite(value) and feats.grad.abs().sum() > 0


# --- boundary_dou -----------------------------------------------------------------------------------


def dou_reference(logits: torch.Tensor, target: torch.Tensor, classes: int, cap: float = 0.8) -> float:
    p, t, s = logits.softmax(1).double().numpy(), target.numpy(), 1e-5
    out = []
    for c in range(classes):
        g = (t == c).astype(float)
        pad = np.pad(g, ((0, 0), (1, 1), (1, 1)))
        cross = (
            pad[:, 1:-1, 1:-1] + pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]
        )
        rim, area = ((cross * g > 0) & (cross < 5)).sum(), g.sum()
        alpha = min(2 * (1 - (rim + s) / (area + s)) - 1, cap)
        inter, z = (p[:, c] * g).sum(), (p[:, c] ** 2).sum()
        out.append((z + area - 2 * inter + s) / (z + area - (1 + alpha) * inter + s))
    return float(np.mean(out))


@pytest.mark.parametrize("cap", [0.8, 0.3])
def test_boundary_dou_matches_a_numpy_transcription_of_the_authors_code(cap):
    target = blobs(3, 18, 20, 4, regions=6)
    target[target == 3] = 2  # class 3 absent: it scores exactly 1
    logits = noisy_logits(target, 4, margin=1.0)
    got = create_loss("boundary_dou", num_classes=4, max_alpha=cap)(logits, target).item()
    assert got == pytest.approx(dou_reference(logits, target, 4, cap), rel=1e-5)


# --- region_wise ------------------------------------------------------------------------------------


def rrw_reference(target: np.ndarray, classes: int) -> np.ndarray:
    """The authors' ``_compute_rrwmap``: −EDT/max inside each class, +1 elsewhere."""
    out = np.zeros((target.shape[0], classes, *target.shape[1:]))
    for b, lab in enumerate(target):
        for c in range(classes):
            d = edt(lab == c)
            d = -d / (d.max() + 1e-15)
            out[b, c] = np.where(d == 0, 1.0, d)
    return out


def test_region_wise_matches_the_authors_rrw_maps_and_signed_option_is_boundary_loss():
    target = blobs(2, 22, 18, 4, regions=6)  # some class may be absent: +1 everywhere
    logits = noisy_logits(target, 4)
    p = logits.softmax(1).numpy()
    rrw = create_loss("region_wise", num_classes=4)
    np.testing.assert_allclose(rrw.maps(target).numpy(), rrw_reference(target.numpy(), 4), atol=1e-6)
    assert rrw(logits, target).item() == pytest.approx(
        (p * rrw_reference(target.numpy(), 4)).mean(), rel=1e-5
    )
    signed = create_loss("region_wise", num_classes=4, rw_map="signed")(logits, target).item()
    assert signed == pytest.approx((p * kervadec_maps(target.numpy(), 4)).mean(), rel=1e-5)


def test_active_boundary_rejects_an_unknown_threshold_rule_by_name():
    with pytest.raises(ValueError, match="threshold='global' is not one of"):
        create_loss("active_boundary", num_classes=3, threshold="global")
