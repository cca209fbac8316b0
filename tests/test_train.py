"""Training-loop mechanics: numbered draws, schedules, checkpoints, exact resume, NaN detection."""

from __future__ import annotations

import dataclasses
import itertools
import re
import signal

import pytest
import torch
from helpers import make_cfg
from omegaconf import OmegaConf
from torch import nn

from bench.train import (
    DrawSampler,
    Interrupted,
    NonFiniteLoss,
    Trainer,
    load_checkpoint,
    make_scheduler,
    save_checkpoint,
)
from bench.trainer_config import (
    DEFAULTS,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    keys,
    shipped,
)
from datasets.synthetic import SyntheticDataset

CFG = {
    "max_steps": 8,
    "batch_size": 4,
    "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 1e-4},
    "scheduler": {"name": "poly", "power": 0.9},
    "log_every": 2,
    "ckpt_every": 100,
    "channels_last": True,
    "progress_bar": False,
}
GEN = {"train_cases": 2, "test_cases": 1, "depth": 4, "size": 16, "seed": 0}


def take(it, n):
    return list(itertools.islice(it, n))


def test_draws_are_a_seeded_permutation_per_epoch():
    draws = take(iter(DrawSampler(5, seed=1)), 10)
    assert sorted(d % 5 for d in draws[:5]) == list(range(5)) and all(d < 5 for d in draws[:5])
    assert all(5 <= d < 10 for d in draws[5:])
    assert draws == take(iter(DrawSampler(5, seed=1)), 10)
    assert draws != take(iter(DrawSampler(5, seed=2)), 10)


def test_draw_stream_resumes_at_any_position_and_shards_across_ranks():
    full = take(iter(DrawSampler(7, seed=0)), 30)
    assert take(iter(DrawSampler(7, seed=0, start=12)), 18) == full[12:]
    ranks = [take(iter(DrawSampler(7, seed=0, start=12, rank=r, world=3)), 6) for r in range(3)]
    assert [d for step in zip(*ranks, strict=True) for d in step] == full[12:30]


def test_empty_training_split_is_a_clear_error():
    with pytest.raises(ValueError, match="training split is empty"):
        DrawSampler(0, seed=0)


def test_poly_schedule_decays_to_zero():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, SchedulerConfig("poly", power=0.9, warmup_steps=0), max_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs == sorted(lrs, reverse=True)
    assert lrs[5] == pytest.approx(0.5**0.9)


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 2
    path.write_bytes(path.read_bytes()[:20])  # truncated mid-write by a crash
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".last.pt.*"))  # no temp files left behind


def make_trainer(tmp_path, data_root, loss_fn=None, **cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 9, 3, padding=1))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return {"logits": self.net(x)}

    train = SyntheticDataset(data_root / "tiny16", "train", img_size=16, generator=GEN, seed=3)
    return Trainer(
        {**CFG, **cfg},
        model=Wrap(),
        loss_fn=loss_fn or nn.CrossEntropyLoss(ignore_index=255),
        loss_name="ce",
        loss_inputs=(),
        train_set=train,
        device=torch.device("cpu"),
        seed=3,
        ckpt_dir=tmp_path / "ckpt",
    )


def test_interrupted_then_resumed_training_equals_uninterrupted(tmp_path, data_root):
    straight = make_trainer(tmp_path / "a", data_root)
    straight.fit()

    first = make_trainer(tmp_path / "b", data_root)
    first.log = lambda values, step: step == 2 and setattr(first, "_signal", signal.SIGTERM)
    with pytest.raises(Interrupted, match="SIGTERM at step 4"):  # acted on at the next log step
        first.fit()
    second = make_trainer(tmp_path / "b", data_root)
    assert second.resume() and second.step == 4
    second.fit()

    for p, q in zip(straight.model.parameters(), second.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [h["train/loss"] for h in second.history["train"]] == [
        h["train/loss"] for h in straight.history["train"]
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_signals_are_caught_checkpointed_and_chained(tmp_path, data_root, signum):
    seen = []
    previous = signal.signal(signum, lambda s, f: seen.append(s))  # e.g. submitit's requeue handler
    try:
        trainer = make_trainer(tmp_path, data_root, max_steps=50)
        trainer.log = lambda values, step: step == 2 and signal.raise_signal(signum)
        with pytest.raises(Interrupted) as info:
            trainer.fit()
        assert seen == []  # ours ran, not the previous handler
        info.value.chain(signum, None)
        assert seen == [signum]
        assert signal.getsignal(signum) is not trainer._on_signal  # restored after fit
    finally:
        signal.signal(signum, previous)
    assert load_checkpoint(tmp_path / "ckpt" / "last.pt")["step"] == 4


def test_nan_loss_fails_with_the_first_bad_step(tmp_path, data_root):
    class NaNAfter(nn.Module):
        calls = 0

        def forward(self, logits, target):
            NaNAfter.calls += 1
            scale = float("nan") if NaNAfter.calls == 3 else 1.0
            return nn.functional.cross_entropy(logits, target, ignore_index=255) * scale

    trainer = make_trainer(tmp_path, data_root, loss_fn=NaNAfter(), log_every=4)
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        trainer.fit()


def test_loss_parameters_are_optimised_with_their_own_learning_rate(tmp_path, data_root):
    import losses

    t_loss = losses.create_loss("t_loss", num_classes=9)
    trainer = make_trainer(tmp_path, data_root, loss_fn=t_loss, max_steps=2)
    assert len(trainer.optimizer.param_groups) == 2
    before = [p.detach().clone() for p in t_loss.parameters()]
    trainer.fit()
    assert any(not torch.equal(b, p) for b, p in zip(before, t_loss.parameters(), strict=True))
    cfg = {**CFG, "optimizer": {**CFG["optimizer"], "loss_lr": 1e-3}}
    other = make_trainer(
        tmp_path / "o", data_root, loss_fn=losses.create_loss("t_loss", num_classes=9), **cfg
    )
    assert [g["lr"] for g in other.optimizer.param_groups] == [1e-2, 1e-3]


# -- the trainer config: conf/trainer/default.yaml is the one home of every default ----------------


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_every_trainer_default_lives_in_default_yaml_alone(tmp_path):
    for kind in (TrainerConfig, OptimizerConfig, SchedulerConfig):  # the typed config has none
        assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(kind))
        assert all(f.default_factory is dataclasses.MISSING for f in dataclasses.fields(kind))
    default = _flat(OmegaConf.to_container(OmegaConf.load(DEFAULTS)))
    assert list(default) == keys()  # the YAML holds every key of the typed config, nothing else
    debug = _flat(OmegaConf.to_container(OmegaConf.load(DEFAULTS.with_name("debug.yaml"))))
    debug.pop("defaults")
    assert debug and all(default[k] != v for k, v in debug.items())  # changes, never repeats
    # the composed config (no overrides but the dataset) is the YAML's, and types as it is
    cfg = make_cfg(["+data=synthetic"], data_root=tmp_path, output_dir=tmp_path)
    composed = OmegaConf.to_container(cfg.trainer, resolve=True)
    typed = TrainerConfig.from_mapping(composed)
    assert dataclasses.asdict(typed) == composed
    assert typed == shipped(batch_size=cfg.data.batch_size)
    assert (typed.max_steps, typed.optimizer.lr, typed.eval_workers) == (2000, 1e-3, "auto")


def test_a_trainer_given_some_keys_takes_the_others_from_default_yaml(tmp_path, data_root):
    yaml = OmegaConf.load(DEFAULTS)
    trainer = make_trainer(tmp_path, data_root, optimizer={"name": "sgd", "lr": 0.1})
    (group,) = trainer.optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (
        0.1,
        yaml.optimizer.momentum,
        yaml.optimizer.weight_decay,  # not a fallback of the code (it was 0.0 there)
    )
    assert trainer.cfg.monitor == yaml.monitor and trainer.cfg.scheduler.power == yaml.scheduler.power
    with pytest.raises(ValueError, match="batch_size is not set"):
        shipped(max_steps=3)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"max_step": 3}, r"trainer\.max_step=3: unknown key; remove it or use one of: device, max_steps"),
        ({"optimizer": {"betas": [0.9, 0.99]}}, r"trainer\.optimizer\.betas=\[0\.9, 0\.99\]: unknown key"),
    ],
)
def test_an_unknown_trainer_key_is_refused_by_name(change, error):
    with pytest.raises(ValueError, match=error):
        shipped(batch_size=2, **change)


def test_a_missing_trainer_key_is_named():
    complete = dataclasses.asdict(shipped(batch_size=2))
    del complete["scheduler"]["warmup_steps"]
    del complete["amp"]
    with pytest.raises(ValueError) as info:
        TrainerConfig.from_mapping(complete)
    assert re.findall(r"(trainer\.\S+) is missing", str(info.value)) == [
        "trainer.scheduler.warmup_steps",
        "trainer.amp",
    ]
    assert "conf/trainer/default.yaml has every key" in str(info.value)
