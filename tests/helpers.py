"""Helpers shared by the runner tests: paths, tiny-run overrides, config composition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def bench_cli(*args: str, tmp: Path, env: dict | None = None, launcher: str = "bench", timeout: int = 600):
    """Run ``python -m bench ARGS`` (or another module/launcher) in the repo with outputs under ``tmp``."""
    environ = {
        **os.environ,
        "SEGLOSS_OUTPUT": str(tmp / "out"),
        "SEGLOSS_DATA": str(tmp / "data"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "bench", *args] if launcher == "bench" else [*launcher.split(), *args]
    return subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=timeout)


def records(folder: Path) -> dict[str, dict]:
    """All run records below ``folder``, keyed by run directory name."""
    return {p.parent.name: json.loads(p.read_text()) for p in folder.rglob("record.json")}


def bench_popen(args: list[str], tmp: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start ``python -m bench ARGS`` in the background (outputs under ``tmp``), output piped."""
    environ = {
        **os.environ,
        "SEGLOSS_OUTPUT": str(tmp / "out"),
        "SEGLOSS_DATA": str(tmp / "data"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )
