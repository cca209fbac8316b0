"""Helpers shared by the runner tests: paths, tiny-run overrides, config composition."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")

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
