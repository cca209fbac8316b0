"""One run: ``build(cfg)`` → :class:`Parts`, then ``execute(parts, record)``: train → evaluate → record.

:func:`build` makes the parts a config describes (model, loss, train and test data, logger, the
typed trainer config, the evaluation settings) and can be used alone; :func:`execute` trains and
scores them; :func:`run` wraps both in what makes a run safe to re-launch, below.

The run directory is Hydra's output dir, named by the run's overrides (``bench.naming``); one
process writes it at a time (``bench.lock``). A run is its config: the fingerprint of the resolved
config (``bench.identity``) is stored in ``record.json`` and in every checkpoint, and a re-launch in
an existing run directory first compares it:

- same fingerprint: ``completed`` → skipped; ``failed`` → skipped unless ``retry_failed=true``;
  interrupted (or left ``running`` by a killed process) → resumed from ``checkpoints/last.pt``;
- different fingerprint: refused (:class:`RunRefused`, listing the changed keys old → new), never
  resumed or re-scored;
- ``force=true``: starts from scratch; the old record and checkpoints are moved aside to
  ``superseded/<time>/`` (never loaded, never deleted).

Every outcome — completed, failed (with the error, and for a NaN loss the step), interrupted — is
written to ``record.json`` atomically by its :class:`bench.record.RunRecord`, by rank 0 only under
torchrun.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import datasets
import losses
from datasets.base import SegDataset

from . import distributed
from .atomic import remove_stale_temps
from .evaluate import evaluate
from .identity import changes, fingerprint
from .lock import RunLock
from .logger import NullLogger, make_logger
from .model import build_model, freeze_unused
from .protocols import metric_settings
from .record import RECORD, RunRecord, git_commit, now, read_record, redact
from .train import Interrupted, NonFiniteLoss, Trainer, load_checkpoint, seed_everything
from .trainer_config import TrainerConfig

CHECKPOINTS = ("last.pt", "best.pt")
ALONE = distributed.Dist()  # a run without torchrun: rank 0 of 1
SUPERSEDED = "superseded"


class RunRefused(RuntimeError):
    """The run directory holds a run of another config; nothing was changed in it."""


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


def _writer() -> bool:
    """True in the process that writes the run directory (rank 0 under torchrun, else the only one)."""
    return int(os.environ.get("RANK", "0")) == 0


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config of a run as recorded (secrets masked, no ``hydra`` node)."""
    if "hydra" in cfg:  # a sweep config composed by a launcher
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return redact(OmegaConf.to_container(cfg, resolve=True))


def same_run(record: dict[str, Any], fp: str) -> bool:
    """True when ``record`` is of the config with fingerprint ``fp`` (records written before
    fingerprints existed are fingerprinted from their stored config)."""
    return (record.get("fingerprint") or fingerprint(record.get("config") or {})) == fp


def skip_reason(cfg: DictConfig, previous: dict | None, run_dir: Path, fp: str | None = None) -> str | None:
    """Why the run in ``run_dir`` is not run again, or None: its record is of this very config
    (same fingerprint) and says completed, or failed without ``retry_failed``; ``force`` runs it.

    A record of another config is not a reason to skip: the run itself refuses (:class:`RunRefused`).
    The SLURM launcher asks this before it submits a job."""
    if previous is None or cfg.force:
        return None
    fp = fp or fingerprint(run_config(cfg))
    if not same_run(previous, fp):
        return None
    status = previous.get("status")
    if status == "completed":
        return f"already completed in {run_dir}; skipping (force=true re-runs it)"
    if status == "failed" and not cfg.retry_failed:
        return f"failed before ({previous.get('error')}); skipping (retry_failed=true re-runs it)"
    return None


def supersede(run_dir: Path) -> Path | None:
    """Move the record and checkpoints of ``run_dir`` to ``superseded/<time>/`` (the record renamed
    ``record.superseded.json`` so that readers of ``record.json`` files never see it)."""
    record, ckpts = run_dir / RECORD, run_dir / "checkpoints"
    if not record.exists() and not ckpts.exists():
        return None
    dest = run_dir / SUPERSEDED / now().replace(":", "")
    while dest.exists():
        dest = dest.with_name(dest.name + "_")
    dest.mkdir(parents=True)
    if record.exists():
        os.replace(record, dest / "record.superseded.json")
    if ckpts.exists():
        shutil.move(str(ckpts), dest / "checkpoints")
    return dest


def refusal(run_dir: Path, old: dict | None, config: dict[str, Any], what: str) -> str:
    """The message of a re-launch refused because ``run_dir`` holds another config."""
    listed = changes(old, config) if old is not None else []
    detail = "; ".join(listed) if listed else "its fingerprint differs (no config to compare)"
    return (
        f"{run_dir} holds {what} of another config ({detail}). Not resumed, not re-scored: re-launch "
        "with force=true to start it from scratch (the old run is moved to superseded/), or give "
        "the new config another name=..."
    )


def run(cfg: DictConfig, run_dir: Path, run_name: str) -> dict[str, Any]:
    """Execute the run described by ``cfg`` in ``run_dir``; returns its final record.

    Raises :class:`RunRefused` when ``run_dir`` holds a run of another config and
    :class:`bench.lock.RunLocked` when another live process writes it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_config(cfg)
    fp = fingerprint(config)
    writer = _writer()
    with RunLock(run_dir) if writer else contextlib.nullcontext() as lock:
        if lock is not None and lock.stale:
            h = lock.stale
            print(f"[bench] {run_name}: took over the lock of pid {h.get('pid')} on {h.get('host')} (gone)")
        if writer:  # temp files of writes killed midway; ours alone, and no live writer (we hold the lock)
            remove_stale_temps(run_dir, (RECORD,))
            remove_stale_temps(run_dir / "checkpoints", CHECKPOINTS)
        previous = read_record(run_dir)
        state = None
        if cfg.force:
            moved = supersede(run_dir) if writer else None
            if moved is not None:
                print(f"[bench] {run_name}: force=true, starting from scratch; the old run is in {moved}")
            previous = None
        else:
            if previous is not None and not same_run(previous, fp):
                raise RunRefused(refusal(run_dir, previous.get("config"), config, "a run"))
            message = skip_reason(cfg, previous, run_dir, fp)
            if message is not None:
                print(f"[bench] {run_name}: {message}")
                return previous
            if cfg.resume:
                state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
                if state is not None and state.get("fingerprint") != fp:
                    what = f"a checkpoint (last.pt, fingerprint {state.get('fingerprint')}, this run: {fp})"
                    raise RunRefused(refusal(run_dir, None, config, what))
        rank = distributed.setup(resolve_device_type(cfg.trainer.device))
        try:
            return _run(cfg, run_dir, run_name, previous, rank, config, fp, state)
        finally:
            distributed.cleanup()


@dataclass(frozen=True)
class Evaluation:
    """How the test set is scored: under every protocol of ``data.protocol`` at the end, under the
    first during training (``trainer.eval_every``); ``metric_kwargs``: ``bench.protocols.metric_settings``."""

    protocols: list[str]
    eval_classes: list[int] | None
    batch_size: int
    metric_kwargs: dict[str, Any]


@dataclass(frozen=True)
class Parts:
    """What a run is made of, built from its config by :func:`build`; nothing trained yet."""

    model: nn.Module
    loss: nn.Module
    loss_name: str
    loss_inputs: tuple[str, ...]  # what the loss takes besides (logits, target): aux, features, progress
    loss_maps: tuple[str, ...]  # ground-truth-derived maps it takes, made in the loader workers
    train_set: SegDataset
    test_set: SegDataset
    logger: Any  # bench.logger: NullLogger or WandbLogger
    trainer: TrainerConfig
    evaluation: Evaluation
    device: torch.device
    seed: int
    num_workers: int  # data loader workers, for training and evaluation


def eval_dataset(cfg: DictConfig) -> dict[str, Any]:
    """The data config the model is scored on: ``data.test_dataset`` (another dataset with the same
    classes, e.g. Synthia → Cityscapes) or ``data`` itself."""
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    return data_cfg.get("test_dataset") or data_cfg


def build(
    cfg: DictConfig,
    rank: distributed.Dist = ALONE,
    *,
    run_dir: Path | None = None,
    run_name: str = "",
    created: str = "",
) -> Parts:
    """The parts of the run ``cfg`` describes: seeds the RNGs, picks the device, builds the data
    (pre-flighted), the loss, the model and the logger. ``run_dir``: where the run lives (the W&B
    logger's id); without one the logger is :class:`bench.logger.NullLogger`, as on ranks other
    than 0. Raises ValueError for data, loss and model configs that do not fit together."""
    trainer_cfg = TrainerConfig.from_mapping(OmegaConf.to_container(cfg.trainer, resolve=True))
    seed = int(cfg.seed)
    seed_everything(seed)
    device = resolve_device(trainer_cfg.device, rank.local_rank)
    if trainer_cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not trainer_cfg.deterministic
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    train_set = datasets.create_dataset(cfg.data.name, root=cfg.data.root, seed=seed, **data_cfg["train"])
    eval_cfg = eval_dataset(cfg)
    test_set = datasets.create_dataset(eval_cfg["name"], root=eval_cfg["root"], **eval_cfg["test"])
    if tuple(test_set.class_names) != tuple(train_set.class_names):
        raise ValueError(
            f"data.test_dataset {eval_cfg['name']!r} has classes {test_set.class_names}, but the model "
            f"is trained on {cfg.data.name!r} with {train_set.class_names}"
        )
    for part in (train_set, test_set):  # data pre-flight (issue 11): files open, labels in range
        part.preflight()
    # NSD tolerances, Boundary IoU width: checked before training
    metric_kwargs = metric_settings({**data_cfg, **eval_cfg}, test_set.class_names)
    num_classes = cfg.data.num_classes
    if train_set.num_classes != num_classes:
        raise ValueError(
            f"data.num_classes={num_classes} but dataset {cfg.data.name!r} has "
            f"{train_set.num_classes} classes {train_set.class_names}"
        )
    loss_params = OmegaConf.to_container(cfg.loss.params, resolve=True)
    info = losses.loss_info(cfg.loss.name, loss_params)  # a composite: its terms' inputs
    loss_fn = losses.create_loss(
        cfg.loss.name, num_classes=num_classes, ignore_index=int(cfg.data.ignore_index), **loss_params
    )
    model = build_model(
        cfg.model.arch,
        cfg.model.encoder_name,
        cfg.model.encoder_weights,
        in_channels=cfg.data.in_channels,
        num_classes=num_classes,
        aux_channels=info.num_aux_channels(num_classes),
        with_features="features" in info.inputs,
        kwargs=OmegaConf.to_container(cfg.model.kwargs, resolve=True),
    )
    if rank.enabled:
        freeze_unused(model, cfg.data.in_channels)
        if device.type == "cuda":  # batch statistics over all GPUs, as mmseg's SyncBN
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    logger = NullLogger()
    if rank.main and run_dir is not None:
        logger = make_logger(
            OmegaConf.to_container(cfg.logger, resolve=True),
            run_dir=run_dir,
            name=run_name,
            config=run_config(cfg),
            created=created,
        )
    protocols = [cfg.data.protocol] if isinstance(cfg.data.protocol, str) else list(cfg.data.protocol)
    return Parts(
        model=model,
        loss=loss_fn,
        loss_name=cfg.loss.name,
        loss_inputs=info.inputs,
        loss_maps=info.gt_maps(OmegaConf.to_container(cfg.loss.params, resolve=True)),
        train_set=train_set,
        test_set=test_set,
        logger=logger,
        trainer=trainer_cfg,
        evaluation=Evaluation(
            protocols=protocols,
            eval_classes=eval_cfg.get("eval_classes", data_cfg.get("eval_classes")),
            batch_size=int(eval_cfg.get("eval_batch_size", cfg.data.eval_batch_size)),
            metric_kwargs=metric_kwargs,
        ),
        device=device,
        seed=seed,
        num_workers=int(cfg.data.num_workers),
    )


def score(
    parts: Parts, model: nn.Module, protocols: list[str], rank: distributed.Dist = ALONE
) -> list[dict[str, Any]]:
    """``model`` scored on the test set of ``parts``: one metrics block per protocol. Class subsets
    are the training dataset's (Synthia's mIoU16/mIoU13 also when scored on Cityscapes)."""
    ev = parts.evaluation
    return evaluate(
        model,
        parts.test_set,
        protocols=protocols,
        subsets=parts.train_set.eval_subsets,
        eval_classes=ev.eval_classes,
        device=parts.device,
        batch_size=ev.batch_size,
        num_workers=parts.num_workers,
        amp=bool(parts.trainer.amp),
        channels_last=bool(parts.trainer.channels_last),
        workers=parts.trainer.eval_workers,
        **ev.metric_kwargs,
        rank=rank.rank,
        world=rank.world,
    )


def execute(
    parts: Parts,
    record: RunRecord,
    *,
    ckpt_dir: Path,
    fingerprint: str,
    state: dict[str, Any] | None = None,
    rank: distributed.Dist = ALONE,
    run_name: str = "",
) -> dict[str, Any]:
    """Train (from ``state``, a checkpoint of this run, when given) → evaluate → record the run
    completed and close the logger; returns the record. Errors propagate, unrecorded (:func:`run`
    records them)."""
    protocols = parts.evaluation.protocols
    trainer = Trainer(
        parts.trainer,
        model=parts.model,
        loss_fn=parts.loss,
        loss_name=parts.loss_name,
        loss_inputs=parts.loss_inputs,
        loss_maps=parts.loss_maps,
        train_set=parts.train_set,
        device=parts.device,
        seed=parts.seed,
        ckpt_dir=ckpt_dir,
        fingerprint=fingerprint,
        num_workers=parts.num_workers,
        evaluate=lambda m: score(parts, m, protocols[:1], rank)[0],
        log=parts.logger.log,
        rank=rank.rank,
        world=rank.world,
    )
    if state is not None:
        trainer.load_state_dict(state)
        print(f"[bench] {run_name}: resumed at step {trainer.step}")
        del state
    t_train = time.perf_counter()
    trainer.fit()
    t_eval = time.perf_counter()
    metrics = score(parts, trainer.model, protocols, rank)
    record.complete(
        metrics,
        trainer.history,
        train_s=t_eval - t_train,
        eval_s=time.perf_counter() - t_eval,
        steps=trainer.step,
    )
    parts.logger.finish(metrics[0], metrics[1:])
    return record.fields


def _run(
    cfg: DictConfig,
    run_dir: Path,
    run_name: str,
    previous: dict | None,
    rank: distributed.Dist,
    config: dict[str, Any],
    fp: str,
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    record = RunRecord.start(
        run_dir,
        fingerprint=fp,
        name=run_name,
        loss=cfg.loss.name,
        data=cfg.data.name,
        eval_data=eval_dataset(cfg)["name"],
        model=cfg.model.name,
        seed=int(cfg.seed),
        config=config,
        commit=git_commit(cfg.paths.root),
        previous=previous,
        write=rank.main,
    )
    parts = None
    try:
        parts = build(cfg, rank, run_dir=run_dir, run_name=run_name, created=record.created)
        return execute(
            parts,
            record,
            ckpt_dir=run_dir / "checkpoints",
            fingerprint=fp,
            state=state,
            rank=rank,
            run_name=run_name,
        )
    except BaseException as e:
        if record.status == "running":  # a failure after the record says completed leaves it so
            if isinstance(e, Interrupted):
                record.interrupt(str(e))
            elif isinstance(e, KeyboardInterrupt):  # a second Ctrl-C, or one outside the training loop
                record.interrupt("aborted by SIGINT; resumable from the last checkpoint")
            else:
                record.fail(e, e.step if isinstance(e, NonFiniteLoss) else None)
        if parts is not None:
            parts.logger.finish(None)
        if isinstance(e, Interrupted) and e.chain is not None:
            e.chain(e.signum, None)  # e.g. submitit's checkpoint-and-requeue handler on SLURM
        raise
