"""One run: build model, loss and data from the config, then train → evaluate → record.

The run directory is Hydra's output dir, named by the run's overrides (``bench.naming``). A run
whose record says ``completed`` is skipped unless ``force=true``, a ``failed`` one unless
``retry_failed=true`` (or ``force``); an interrupted one resumes from ``checkpoints/last.pt``
(``resume=true``). Every outcome — completed, failed (with the error, and for a NaN loss the step),
interrupted — is written to ``record.json`` atomically, by rank 0 only under torchrun.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import datasets
import losses

from . import distributed
from .evaluate import evaluate
from .logger import NullLogger, make_logger
from .model import build_model, freeze_unused
from .record import RECORD, TMP, git_commit, now, read_record, redact, versions, write_json_atomic
from .train import Interrupted, NonFiniteLoss, Trainer, seed_everything


def resolve_device_type(name: str) -> str:
    return "cuda" if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available; under torchrun each rank takes GPU ``LOCAL_RANK``."""
    device = torch.device(resolve_device_type(name) if name == "auto" else name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"trainer.device={name!r} but CUDA is not available; use trainer.device=auto or cpu"
            )
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    return device


def run(cfg: DictConfig, run_dir: Path, run_name: str) -> dict[str, Any]:
    """Execute the run described by ``cfg`` in ``run_dir``; returns its final record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.rglob(f".*{TMP}"):  # left by a writer killed mid-write; never read
        stale.unlink(missing_ok=True)
    previous = read_record(run_dir)
    status = (previous or {}).get("status")
    if status == "completed" and not cfg.force:
        print(f"[bench] {run_name}: already completed in {run_dir}; skipping (force=true re-runs it)")
        return previous
    if status == "failed" and not (cfg.force or cfg.retry_failed):
        print(
            f"[bench] {run_name}: failed before ({previous.get('error')}); skipping "
            "(retry_failed=true re-runs it)"
        )
        return previous
    rank = distributed.setup(resolve_device_type(cfg.trainer.device))
    try:
        return _run(cfg, run_dir, run_name, previous, rank)
    finally:
        distributed.cleanup()


def _run(
    cfg: DictConfig, run_dir: Path, run_name: str, previous: dict | None, rank: distributed.Dist
) -> dict[str, Any]:
    save = write_json_atomic if rank.main else (lambda path, obj: None)
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    record: dict[str, Any] = {
        "status": "running",
        "name": run_name,
        "loss": cfg.loss.name,
        "data": cfg.data.name,
        "model": cfg.model.name,
        "seed": int(cfg.seed),
        "config": config,
        "metrics": None,
        "history": None,
        "timings": {},
        "versions": versions(),
        "commit": git_commit(cfg.paths.root),
        "created": (previous or {}).get("created", now()),
        "updated": now(),
        "run_dir": str(run_dir),
    }
    save(run_dir / RECORD, record)
    logger = None
    t_start = time.perf_counter()
    try:
        seed_everything(int(cfg.seed))
        device = resolve_device(cfg.trainer.device, rank.local_rank)
        if cfg.trainer.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = not cfg.trainer.deterministic
        data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
        train_set = datasets.build(cfg.data.name, root=cfg.data.root, seed=int(cfg.seed), **data_cfg["train"])
        # evaluation on another dataset with the same classes (e.g. Synthia → Cityscapes)
        eval_cfg = data_cfg.get("test_dataset") or data_cfg
        test_set = datasets.build(eval_cfg["name"], root=eval_cfg["root"], **eval_cfg["test"])
        if tuple(test_set.class_names) != tuple(train_set.class_names):
            raise ValueError(
                f"data.test_dataset {eval_cfg['name']!r} has classes {test_set.class_names}, but the model "
                f"is trained on {cfg.data.name!r} with {train_set.class_names}"
            )
        record["eval_data"] = eval_cfg["name"]
        if train_set.num_classes != cfg.data.num_classes:
            raise ValueError(
                f"data.num_classes={cfg.data.num_classes} but dataset {cfg.data.name!r} has "
                f"{train_set.num_classes} classes {train_set.class_names}"
            )
        info = losses.loss_info(cfg.loss.name)
        loss_fn = losses.create_loss(
            cfg.loss.name,
            num_classes=cfg.data.num_classes,
            **OmegaConf.to_container(cfg.loss.params, resolve=True),
        )
        model = build_model(
            cfg.model.arch,
            cfg.model.encoder_name,
            cfg.model.encoder_weights,
            in_channels=cfg.data.in_channels,
            num_classes=cfg.data.num_classes,
            aux_channels=info.num_aux_channels(cfg.data.num_classes),
            with_features="features" in info.inputs,
            kwargs=OmegaConf.to_container(cfg.model.kwargs, resolve=True),
        )
        if rank.enabled:
            freeze_unused(model, cfg.data.in_channels)
            if device.type == "cuda":  # batch statistics over all GPUs, as mmseg's SyncBN
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        logger = (
            make_logger(
                OmegaConf.to_container(cfg.logger, resolve=True),
                run_dir=run_dir,
                name=run_name,
                config=config,
            )
            if rank.main
            else NullLogger()
        )
        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)

        protocols = [cfg.data.protocol] if isinstance(cfg.data.protocol, str) else list(cfg.data.protocol)

        def score(m: torch.nn.Module, names: list[str]) -> list[dict[str, Any]]:
            return evaluate(
                m,
                test_set,
                protocols=names,
                eval_classes=eval_cfg.get("eval_classes", data_cfg.get("eval_classes")),
                device=device,
                batch_size=int(eval_cfg.get("eval_batch_size", cfg.data.eval_batch_size)),
                num_workers=int(cfg.data.num_workers),
                amp=bool(cfg.trainer.amp),
                channels_last=bool(cfg.trainer.channels_last),
                workers=trainer_cfg.get("eval_workers", 0),
                rank=rank.rank,
                world=rank.world,
            )

        trainer = Trainer(
            trainer_cfg,
            model=model,
            loss_fn=loss_fn,
            loss_name=cfg.loss.name,
            loss_inputs=info.inputs,
            loss_maps=info.gt_maps(OmegaConf.to_container(cfg.loss.params, resolve=True)),
            train_set=train_set,
            device=device,
            seed=int(cfg.seed),
            ckpt_dir=run_dir / "checkpoints",
            num_workers=int(cfg.data.num_workers),
            evaluate=lambda m: score(m, protocols[:1])[0],
            log=logger.log,
            rank=rank.rank,
            world=rank.world,
        )
        if cfg.resume and trainer.resume():
            print(f"[bench] {run_name}: resumed at step {trainer.step}")
        t_train = time.perf_counter()
        trainer.fit()
        t_eval = time.perf_counter()
        metrics, *more = score(trainer.model, protocols)
        record.update(
            status="completed",
            metrics=metrics,
            **({"more_metrics": more} if more else {}),
            history=trainer.history,
            timings={
                "train_s": t_eval - t_train,
                "eval_s": time.perf_counter() - t_eval,
                "total_s": time.perf_counter() - t_start,
                "steps": trainer.step,
            },
            updated=now(),
        )
        save(run_dir / RECORD, record)
        logger.finish(metrics)
        return record
    except BaseException as e:
        if isinstance(e, Interrupted):
            record.update(status="interrupted", error=str(e))
        else:
            record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            if isinstance(e, NonFiniteLoss):
                record["failed_step"] = e.step
        record.update(updated=now(), timings={"total_s": time.perf_counter() - t_start})
        save(run_dir / RECORD, record)
        if logger is not None:
            logger.finish(None)
        if isinstance(e, Interrupted) and e.chain is not None:
            e.chain(e.signum, None)  # e.g. submitit's checkpoint-and-requeue handler on SLURM
        raise
