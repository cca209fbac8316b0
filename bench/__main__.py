"""``python -m bench +loss=<loss> +data=<dataset> [overrides]`` — one run, or a sweep with ``-m``."""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .atomic import atomic_write
from .callbacks import outcome, write_outcome
from .identity import mask_text, mask_yaml
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
    from .lock import RunLocked
    from .record import now
    from .run import RunRefused, run
    from .train import Interrupted

    cap_threads()

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    sys.argv[:] = [mask_text(a) for a in sys.argv]  # Hydra has parsed them; W&B records the command line
    # Hydra saved the overrides and configs as given: mask secret values there too
    saved = [*(run_dir / str(hc.output_subdir)).glob("*.yaml")] if hc.output_subdir else []
    mask_files([*saved, Path(hc.sweep.dir) / "multirun.yaml"] if multirun else saved)
    started, record = now(), None
    try:
        record = run(cfg, run_dir, run_dir.name)
        result = outcome(record, started)
    except (RunRefused, RunLocked) as e:
        print(f"[bench] {run_dir.name}: {e}", file=sys.stderr)
        if not multirun:
            sys.exit(1)
        result = {"status": "locked" if isinstance(e, RunLocked) else "refused", "reason": str(e)}
    except (Interrupted, KeyboardInterrupt) as e:
        if not multirun:
            raise
        reason = str(e) or "aborted by SIGINT"
        write_outcome(Path(hc.sweep.dir), run_dir.name, {"status": "interrupted", "reason": reason})
        if "BasicLauncher" not in str(hc.launcher.get("_target_", "")):
            raise  # a submitit job: its launcher handles the signal (checkpoint, requeue)
        # jobs of the local launcher run in this process: stop the sweep, do not start the next job
        signum = getattr(e, "signum", 2)
        print(f"[bench] sweep stopped: {run_dir.name}: {reason}; re-launch to resume", file=sys.stderr)
        raise SystemExit(128 + signum) from e
    except Exception as e:
        if not multirun:
            raise
        # fault isolation: the failure is in the run's record; the sweep goes on (summary at the end)
        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    if multirun:
        write_outcome(Path(hc.sweep.dir), run_dir.name, result)
    return record


def mask_files(paths: list[Path]) -> None:
    """Rewrite YAML files (Hydra's saved configs) that hold a secret-looking value, masked."""
    for path in paths:
        try:
            text = path.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            continue
        masked = mask_yaml(text)
        if masked != text:
            atomic_write(path, lambda f, masked=masked: f.write(masked.encode()))


def mask_logs() -> None:
    """Mask secret-looking ``key=value`` pairs in every log message (Hydra logs each job's overrides)."""
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        rec = make(*args, **kwargs)
        if isinstance(rec.msg, str):
            rec.msg = mask_text(rec.msg)
        return rec

    logging.setLogRecordFactory(factory)


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
    mask_logs()
    main()


if __name__ == "__main__":
    cli()
