"""``python -m bench +loss=<loss> +data=<dataset> [overrides]`` — one run, or a sweep with ``-m``."""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .naming import register_resolvers

CONF = str(Path(__file__).resolve().parent.parent / "conf")
APPENDED = ("loss", "data")


def usage() -> str:
    import datasets
    import losses

    return (
        "Choose a loss and a dataset:  python -m bench +loss=<loss> +data=<dataset> [key=value ...]\n"
        "  sweep:  python -m bench -m +loss=ce,dice,focal +data=synthetic seed=0,1,2\n"
        f"losses:   {' '.join(losses.list_losses())}\n"
        f"datasets: {' '.join(datasets.list_datasets())}\n"
        "models:   "
        + " ".join(sorted(p.stem for p in (Path(CONF) / "model").glob("*.yaml")))
        + "  (model=<name>)"
    )


def check_argv(argv: list[str]) -> str | None:
    """A message for ``loss=...``/``data=...`` written without the ``+`` (Hydra's error is obscure).

    With an experiment recipe, ``data=...`` overrides the data the recipe chose and is left alone."""
    if any(re.match(r"\+?experiment=", a) for a in argv):
        return None
    for arg in argv:
        m = re.fullmatch(r"(loss|data)=(.*)", arg)
        if m:
            return (
                f"`{arg}`: write `+{arg}` — '{m[1]}' is chosen by appending it to the config.\n\n" + usage()
            )
    return None


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    missing = [g for g in APPENDED if g not in cfg]
    if missing:
        print(f"missing: {', '.join('+' + g + '=...' for g in missing)}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    # -- config validation (issue 11): one line per bad key, exit 2, before anything is built --
    from .config_check import exit_on_errors

    exit_on_errors(cfg)
    # --
    from .run import run
    from .train import Interrupted

    cap_threads()

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        return run(cfg, run_dir, run_dir.name)
    except Exception as e:
        if hc.mode != RunMode.MULTIRUN or isinstance(e, Interrupted):
            raise
        # fault isolation: the failure is in the run's record; the sweep goes on (summary at the end)
        traceback.print_exc()
        return None


def cap_threads() -> None:
    """Under SLURM, as many torch threads as the job's CPUs (results depend on the thread count)."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))


def cli() -> None:
    message = check_argv(sys.argv[1:])
    if message:
        print(message, file=sys.stderr)
        sys.exit(2)
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
