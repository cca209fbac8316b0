"""Shared fixtures: a tiny synthetic dataset and Hydra config composition for runner tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network: pretrained weights must fail fast
os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))

#: overrides that shrink the synthetic data and training to a few seconds on CPU
TINY = [
    "data.generator.train_cases=2",
    "data.generator.test_cases=2",
    "data.generator.depth=6",
    "data.generator.size=32",
    "data.batch_size=4",
    "trainer=debug",
    "trainer.device=cpu",
]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def make_cfg(overrides: list[str], *, data_root: Path, output_dir: Path) -> DictConfig:
    """Compose ``conf/`` like the CLI does, with paths pointing into temp dirs."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.root={ROOT}",
                f"paths.data_root={data_root}",
                f"paths.output_dir={output_dir}",
                *overrides,
            ],
        )
