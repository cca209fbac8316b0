"""Ground-truth maps made in the loader: declared by the losses, computed by ``datasets.gt_maps`` in
the workers, passed by the Trainer, and equal to what a loss computes when called plainly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.train import Trainer
from datasets.gt_maps import WithGTMaps
from losses import create_loss, list_losses, loss_info
from losses.distance import GT_MAPS, gt_maps, label_distance, signed_distance_maps, unsigned_distance_maps
from losses.registry import register_loss

C = 4

# (loss, hyper-parameters): every loss whose maps may come from the loader (active_boundary keeps its own)
CASES = [
    ("dmce", {}),
    ("boundary", {}),
    ("boundary", {"normalize": True}),
    ("boundary_aware", {}),
    ("region_wise", {}),
    ("region_wise", {"rw_map": "signed"}),
    ("hausdorff", {"dice_weight": 1.0}),
]


class Voronoi(Dataset):
    """Items ``{"image", "label"}`` with Voronoi labels of ``C`` classes, some pixels ignored, one
    image holding a single class and one all-ignored (the edge cases of the maps)."""

    num_classes = C

    def __init__(self, n: int = 4, size: tuple[int, int] = (12, 14)) -> None:
        rng = np.random.default_rng(0)
        h, w = size
        yy, xx = np.mgrid[:h, :w]
        self.labels = []
        for i in range(n):
            seeds = rng.random((6, 2)) * (h, w)
            nearest = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(-1)
            lab = rng.integers(0, C, 6)[nearest]
            lab[rng.random((h, w)) < 0.05] = 255
            if i == 2:
                lab[:] = 1
            self.labels.append(torch.from_numpy(lab))
        self.labels.append(torch.full((h, w), 255))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        lab = self.labels[i % len(self)]
        return {"image": torch.zeros(1, *lab.shape), "label": lab.long()}


def inputs_of(name: str, logits: torch.Tensor) -> dict:
    b, _, h, w = logits.shape
    return {
        "aux": {"aux": torch.randn(b, loss_info(name).num_aux_channels(C), h, w, requires_grad=True)},
        "progress": {"progress": 0.3},
    }


def runtime_inputs(name: str, logits: torch.Tensor) -> dict:
    given = inputs_of(name, logits)
    return {k: v for key in loss_info(name).inputs for k, v in given[key].items()}


def test_losses_declare_their_maps():
    assert loss_info("boundary").gt_maps() == ("signed_distance",)
    assert loss_info("hausdorff").gt_maps() == ("unsigned_distance",)
    assert loss_info("dmce").gt_maps() == loss_info("boundary_aware").gt_maps() == ("label_distance",)
    assert loss_info("region_wise").gt_maps() == ("label_distance",)
    assert loss_info("region_wise").gt_maps({"rw_map": "signed"}) == ("signed_distance",)
    assert loss_info("ce").gt_maps() == ()
    declared = {n for n in list_losses() if loss_info(n).gt_maps()}
    assert declared == {"dmce", "boundary", "boundary_aware", "region_wise", "hausdorff"}


def test_unknown_maps_are_refused():
    with pytest.raises(ValueError, match="unknown maps"):
        register_loss("_bad_maps", category="pixel", reference="-", maps=("nope",))
    with pytest.raises(ValueError, match="unknown ground-truth maps"):
        WithGTMaps(Voronoi(), ("nope",))
    with pytest.raises(ValueError, match="unknown ground-truth maps"):
        gt_maps(torch.zeros(1, 3, 3, dtype=torch.long), ("nope",), C)


def test_maps_of_the_wrapper_are_the_batch_maps_per_image():
    ds = WithGTMaps(Voronoi(), tuple(GT_MAPS))
    batch = next(iter(DataLoader(ds, batch_size=5)))
    target = batch["label"]
    assert torch.equal(batch["label_distance"], label_distance(target))
    assert torch.equal(batch["signed_distance"], signed_distance_maps(target, C))
    assert torch.equal(batch["unsigned_distance"], unsigned_distance_maps(target, C))
    assert (
        batch["signed_distance"].shape == (5, C, 12, 14) and batch["signed_distance"].dtype == torch.float32
    )
    assert ds.num_classes == C and len(ds) == 5


@pytest.mark.parametrize(("name", "hp"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_loss_with_loader_maps_equals_plain_call(name, hp):
    torch.manual_seed(0)
    maps = loss_info(name).gt_maps(hp)
    batch = next(iter(DataLoader(WithGTMaps(Voronoi(), maps), batch_size=5)))
    target = batch["label"]
    logits = torch.randn(5, C, *target.shape[1:], requires_grad=True)
    extra = runtime_inputs(name, logits)
    loss = create_loss(name, num_classes=C, **hp)
    plain = loss(logits, target, **extra)
    (g_plain,) = torch.autograd.grad(plain, logits)
    given = loss(logits, target, **extra, **{k: batch[k] for k in maps})
    (g_given,) = torch.autograd.grad(given, logits)
    assert torch.equal(plain, given) and torch.equal(g_plain, g_given)
    # and the given maps are the ones used: other maps change the value
    other = {k: batch[k].roll(3, -1) for k in maps}
    assert not torch.equal(loss(logits, target, **extra, **other), plain)


def test_map_of_the_wrong_size_is_a_clear_error():
    target = Voronoi()[0]["label"][None]
    with pytest.raises(ValueError, match="map 'signed_distance' has shape"):
        create_loss("boundary", num_classes=C)(
            torch.randn(1, C, *target.shape[1:]), target, 0.0, signed_distance=torch.zeros(1, C, 3, 3)
        )


class Spy(nn.Module):
    """CE that records the keyword arguments it was called with."""

    num_classes = C

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, logits, target, **kwargs):
        self.calls.append((target.clone(), kwargs))
        return F.cross_entropy(logits, target, ignore_index=255)


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_trainer_passes_the_declared_maps_from_the_loader(tmp_path, workers):
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, C, 3, padding=1)

        def forward(self, x):
            return {"logits": self.conv(x)}

    spy = Spy()
    cfg = {
        "max_steps": 2,
        "batch_size": 2,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "scheduler": {"name": "constant"},
        "log_every": 1,
        "progress_bar": False,
    }
    trainer = Trainer(
        cfg,
        model=Net(),
        loss_fn=spy,
        loss_name="spy",
        loss_inputs=("progress",),
        loss_maps=("signed_distance", "label_distance"),
        train_set=Voronoi(),
        device=torch.device("cpu"),
        seed=0,
        ckpt_dir=tmp_path,
        num_workers=workers,
    )
    trainer.save = lambda name="last.pt": None
    trainer.fit()
    assert len(spy.calls) == 2
    for step, (target, kwargs) in enumerate(spy.calls):
        assert set(kwargs) == {"progress", "signed_distance", "label_distance"}
        assert kwargs["progress"] == step / 2
        assert torch.equal(kwargs["signed_distance"], signed_distance_maps(target, C))
        assert torch.equal(kwargs["label_distance"], label_distance(target))


def test_sync_free_path_equals_the_per_label_path(monkeypatch):
    """The CUDA path (no host syncs: every class, degenerate masks fixed on the device), run on the
    CPU, gives the maps of the per-label path; ignored pixels are one region of their own."""
    import losses.distance as D

    target = torch.stack([Voronoi()[i]["label"] for i in range(5)])
    masks = torch.stack([target[0] == 1, torch.zeros_like(target[0], dtype=torch.bool), target[2] == 1])
    expected = {name: fn(target, C) for name, fn in GT_MAPS.items()}
    expected_edt = D.edt_batch(masks)
    monkeypatch.setattr(D, "_dense", lambda x: True)
    for name, fn in GT_MAPS.items():
        assert torch.equal(fn(target, C), expected[name]), name
    assert torch.equal(D.edt_batch(masks), expected_edt)
    assert torch.equal(expected_edt[2], D.border_distance(masks.shape[1:]))  # a full mask


def test_runner_asks_for_the_maps_of_the_configured_loss(tmp_path, data_root, monkeypatch):
    """``bench.run`` hands the Trainer the maps that the loss's hyper-parameters select."""
    from helpers import TINY, make_cfg

    import bench.run

    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(cfg, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(bench.run, "Trainer", fake_trainer)
    overrides = ["+loss=region_wise", "loss.params.rw_map=signed", "+data=synthetic", *TINY]
    cfg = make_cfg(overrides, data_root=data_root, output_dir=tmp_path)
    with pytest.raises(Stop):
        bench.run.run(cfg, tmp_path / "r", "r")
    assert seen["loss_maps"] == ("signed_distance",) and seen["loss_inputs"] == ()


def test_a_composite_asks_for_its_terms_maps_and_passes_each_term_its_own():
    terms = [{"name": "boundary"}, {"name": "dmce"}, {"name": "ce"}]
    info = loss_info("sum", {"terms": terms})
    wanted = tuple(dict.fromkeys((*loss_info("boundary").gt_maps(), *loss_info("dmce").gt_maps())))
    assert info.gt_maps({"terms": terms}) == wanted
    torch.manual_seed(0)
    target = torch.stack([Voronoi().labels[i] for i in range(3)]).long()
    logits = torch.randn(3, C, *target.shape[1:], requires_grad=True)
    loss = create_loss("sum", num_classes=C, terms=terms)
    plain = loss(logits, target, progress=0.5)
    (g_plain,) = torch.autograd.grad(plain, logits)
    given = loss(logits, target, progress=0.5, **gt_maps(target, wanted, C))
    (g_given,) = torch.autograd.grad(given, logits)
    torch.testing.assert_close(given, plain)
    torch.testing.assert_close(g_given, g_plain)
    shifted = {k: v + 1 for k, v in gt_maps(target, wanted, C).items()}
    assert not torch.allclose(loss(logits, target, progress=0.5, **shifted), plain)  # the maps are used
