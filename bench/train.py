"""The training loop: step-based, AMP bf16 + channels_last on CUDA, no host syncs between log steps.

Exact resume: the data order is a pure function of ``(seed, draw position)`` (:class:`DrawSampler`)
and each draw's augmentation is seeded by its draw number (``datasets.base``), so restoring the
step, model, optimiser, scheduler, loss parameters and RNG states from the checkpoint continues the
run exactly as if it had not stopped. Checkpoints are written atomically every ``ckpt_every`` steps,
at the end, and when SIGTERM/SIGINT (Ctrl-C)/SIGUSR1 (SLURM's warning signal) arrives; a second
SIGINT aborts at once. Each checkpoint holds the run's ``fingerprint`` (``bench.identity``).
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

from datasets.base import worker_init
from datasets.gt_maps import WithGTMaps

from .atomic import PREVIOUS, atomic_write
from .trainer_config import OPTIMIZERS, SCHEDULERS, OptimizerConfig, SchedulerConfig, TrainerConfig, shipped


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/inf; ``step`` is the first offending step."""

    def __init__(self, step: int, loss_name: str) -> None:
        super().__init__(f"loss {loss_name!r} became non-finite (NaN/inf) at step {step}")
        self.step, self.loss_name = step, loss_name

    def __reduce__(self):  # picklable across processes (submitit results): rebuild from the arguments
        return type(self), (self.step, self.loss_name)


class Interrupted(RuntimeError):
    """A signal arrived; a checkpoint was written at ``step``.

    ``chain`` is the handler that was installed before ours (e.g. submitit's requeue on SLURM), to be
    called by the runner once the record is written; None when there was none."""

    def __init__(self, step: int, signum: int, chain: Callable | None = None) -> None:
        super().__init__(f"interrupted by signal {signal.Signals(signum).name} at step {step}; resumable")
        self.step, self.signum = step, signum
        self.chain = chain if callable(chain) else None

    def __reduce__(self):  # picklable across processes; the handler to chain stays in this process
        return type(self), (self.step, self.signum)


class DrawSampler(Sampler[int]):
    """Endless, numbered sample draws: epoch ``e`` visits ``randperm_e(n)`` and yields ``e*n + i``.

    The permutation of epoch ``e`` is seeded by ``(seed, e)``; the stream starts at draw position
    ``start`` and, under DDP, rank ``r`` of ``world`` takes the positions ``p ≡ r (mod world)``.
    """

    def __init__(self, n: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        if n == 0:
            raise ValueError("the training split is empty")
        self.n, self.seed, self.start, self.rank, self.world = n, seed, start, rank, world

    def __iter__(self) -> Iterator[int]:
        pos = self.start + (self.rank - self.start) % self.world
        epoch, perm = -1, None
        while True:
            e, k = divmod(pos, self.n)
            if e != epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
                epoch, perm = e, torch.randperm(self.n, generator=gen).tolist()
            yield e * self.n + perm[k]
            pos += self.world


def _worker_init(worker_id: int) -> None:
    """Loader workers ignore Ctrl-C: a terminal sends SIGINT to the whole process group, and the main
    process handles it (checkpoint at the next log step, then stop) while its workers keep serving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker_init(worker_id)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(params: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over parameter groups (``[{"params": [...]}, ...]``; a group may set its ``lr``)."""
    name = cfg.name
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"trainer.optimizer.name={name!r} is not one of: {', '.join(OPTIMIZERS)}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: SchedulerConfig, max_steps: int):
    """``poly``: lr·(1 − t/T)^power (TransUNet, mmseg); ``onecycle``: PyTorch's OneCycleLR
    (the survey authors' code); ``constant``. Optional linear warm-up for poly/constant."""
    name, warm = cfg.name, int(cfg.warmup_steps)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=max_steps
        )
    if name not in ("poly", "constant"):
        raise ValueError(f"trainer.scheduler.name={name!r} is not one of: {', '.join(SCHEDULERS)}")
    power = float(cfg.power) if name == "poly" else 0.0

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warm) if warm else 1.0
        return ramp * max(0.0, 1 - step / max_steps) ** power

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only or missing folder); the previous
    checkpoint is intact."""


def _write_error(path: Path, e: BaseException) -> CheckpointWriteError:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**30:.2f} GiB free"
    except OSError:
        free = "free space unknown"
    first = (str(e).strip().splitlines() or [""])[0]
    return CheckpointWriteError(
        f"cannot write checkpoint {path} ({type(e).__name__}: {first}); {free} in {path.parent}; "
        "the previous checkpoint is kept — free some space or make the folder writable (or choose another "
        "paths.output_dir), then run again to resume"
    )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic write (``bench.atomic``); the previous file is kept as ``<name>.prev``.

    A failed write (disk full, read-only folder) leaves the previous files untouched and raises
    :class:`CheckpointWriteError` naming the path and the free space."""
    try:
        atomic_write(path, lambda f: torch.save(state, f), keep_previous=True)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as RuntimeError (inline_container)
        raise _write_error(path, e) from e


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """Load ``path`` (``weights_only=True``); fall back to ``<name>.prev`` if it is corrupt."""
    for candidate in (path, path.with_name(path.name + PREVIOUS)):
        if candidate.exists():
            try:
                return torch.load(candidate, map_location="cpu", weights_only=True)
            except Exception as e:  # truncated or corrupt: try the previous one
                print(
                    f"checkpoint {candidate} is unreadable ({type(e).__name__}: {e}); trying the previous one"
                )
    return None


class Trainer:
    """Fits ``model`` with ``loss_fn`` on ``train_set`` for ``cfg.max_steps`` steps.

    ``cfg``: a :class:`TrainerConfig`, or a mapping of the keys that differ from the shipped
    config (``bench.trainer_config.shipped``)."""

    def __init__(
        self,
        cfg: TrainerConfig | Mapping[str, Any],
        *,
        model: nn.Module,
        loss_fn: nn.Module,
        loss_name: str,
        loss_inputs: tuple[str, ...],
        train_set: Dataset,
        loss_maps: tuple[str, ...] = (),
        device: torch.device,
        seed: int,
        ckpt_dir: Path,
        fingerprint: str | None = None,
        num_workers: int = 0,
        evaluate: Callable[[nn.Module], dict[str, Any]] | None = None,
        log: Callable[[dict[str, float], int], None] = lambda values, step: None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        cfg = cfg if isinstance(cfg, TrainerConfig) else shipped(**cfg)
        self.cfg, self.device, self.seed = cfg, device, seed
        self.max_steps = int(cfg.max_steps)
        self.batch_size = int(cfg.batch_size)
        self.loss_fn, self.loss_name, self.loss_inputs = loss_fn.to(device), loss_name, loss_inputs
        self.loss_maps = tuple(loss_maps)  # target maps the loss takes, made in the loader workers
        self.train_set, self.num_workers = train_set, num_workers
        self.evaluate, self.log = evaluate, log
        self.rank, self.world = rank, world
        self.ckpt_dir, self.fingerprint = ckpt_dir, fingerprint
        self.channels_last = bool(cfg.channels_last)
        self.amp = bool(cfg.amp) and device.type == "cuda"
        self.model = model.to(device, memory_format=torch.channels_last if self.channels_last else None)
        self.forward = self.model
        if world > 1:
            ids = [device.index] if device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.forward = torch.compile(self.forward)
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]  # e.g. T-loss's ν
        if loss_params:
            loss_lr = cfg.optimizer.loss_lr
            groups.append({"params": loss_params, **({"lr": float(loss_lr)} if loss_lr is not None else {})})
        self.optimizer = make_optimizer(groups, cfg.optimizer)
        self.scheduler = make_scheduler(self.optimizer, cfg.scheduler, self.max_steps)
        self.step, self.best = 0, -math.inf
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
        self._signal: int | None = None
        self._saving = self._abort = False
        # loss sum and count of the steps since the last log step: checkpointed, so that a run resumed
        # between two log steps logs the same mean loss as an uninterrupted one
        self._partial: tuple[Any, int] = (0.0, 0)
        self._previous: dict[int, Any] = {}

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "step": self.step,
            "best": self.best,
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "history": self.history,
            "partial": [float(self._partial[0]), int(self._partial[1])],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.best, self.history = state["step"], state["best"], state["history"]
        self._partial = tuple(state.get("partial", (0.0, 0)))

    def save(self, name: str = "last.pt") -> None:
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            with self._uninterrupted():
                save_checkpoint(self.ckpt_dir / name, self.state_dict())

    def resume(self) -> bool:
        """Restore ``last.pt`` if present; True when a checkpoint was loaded. A checkpoint of another
        run (another fingerprint) is never loaded: ValueError."""
        state = load_checkpoint(self.ckpt_dir / "last.pt")
        if state is None:
            return False
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{self.ckpt_dir / 'last.pt'} is a checkpoint of run {state.get('fingerprint')}, "
                f"not of {self.fingerprint}"
            )
        self.load_state_dict(state)
        return True

    # -- loop ----------------------------------------------------------------------------------
    def _loader(self) -> Iterator[dict[str, Any]]:
        sampler = DrawSampler(
            len(self.train_set),
            self.seed,
            start=self.step * self.batch_size * self.world,
            rank=self.rank,
            world=self.world,
        )
        loader = DataLoader(
            WithGTMaps(self.train_set, self.loss_maps) if self.loss_maps else self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            prefetch_factor=4 if self.num_workers else None,
            worker_init_fn=_worker_init,
        )
        return iter(loader)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._signal is not None:  # a second Ctrl-C: stop now
            if self._saving:
                self._abort = True  # once the checkpoint being written is complete
                return
            raise KeyboardInterrupt
        self._signal = signum

    @contextlib.contextmanager
    def _uninterrupted(self):
        """A checkpoint write that a second Ctrl-C does not cut (it aborts right after)."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False
        if self._abort:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def _signals(self):
        """Catch SIGTERM (preemption, torchrun), SIGINT (Ctrl-C), SIGUSR1 (sbatch --signal) and
        SIGUSR2 (submitit)."""
        names = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
        handled = [getattr(signal, n) for n in names if hasattr(signal, n)]
        try:
            self._previous = {s: signal.signal(s, self._on_signal) for s in handled}
        except ValueError:  # not the main thread: leave signals alone
            self._previous = {}
        try:
            yield
        finally:
            for s, h in self._previous.items():
                signal.signal(s, h)

    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimisation step; returns the detached loss on the device (no sync)."""
        image = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        target = batch["label"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.forward(image)
            ctx = {**out, "progress": self.step / self.max_steps}
            maps = {k: batch[k].to(self.device, non_blocking=True) for k in self.loss_maps}
            loss = self.loss_fn(out["logits"], target, **{k: ctx[k] for k in self.loss_inputs}, **maps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), float(self.cfg.grad_clip))
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def _reduce(self, total: torch.Tensor, first_bad: torch.Tensor) -> tuple[float, int, bool]:
        """Mean loss, first non-finite step (-1: none) and "a signal arrived", agreed by all ranks.

        The only host sync of the loop, once per log interval (three tiny all-reduces under DDP)."""
        bad = torch.where(first_bad < 0, self.max_steps + 1, first_bad)
        signalled = torch.tensor(float(self._signal is not None), device=self.device)
        if self.world > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            dist.all_reduce(bad, op=dist.ReduceOp.MIN)
            dist.all_reduce(signalled, op=dist.ReduceOp.MAX)
            total = total / self.world
        first = int(bad)
        if signalled.item() and self._signal is None:
            self._signal = signal.SIGTERM  # another rank was signalled
        return float(total), (first if first <= self.max_steps else -1), bool(signalled.item())

    def fit(self) -> None:
        """Train from ``self.step`` to ``max_steps`` (evaluating and checkpointing on the way).

        Raises :class:`NonFiniteLoss` (with the first bad step) and, after writing a checkpoint,
        :class:`Interrupted` when SIGTERM/SIGINT/SIGUSR1/SIGUSR2 arrived (checked at log steps, so all
        ranks stop at the same step)."""
        log_every = max(1, int(self.cfg.log_every))
        eval_every = int(self.cfg.eval_every)
        ckpt_every = int(self.cfg.ckpt_every)
        self.model.train()
        batches = self._loader()
        total = torch.full((), float(self._partial[0]), device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        count, t0 = int(self._partial[1]), time.perf_counter()
        bar = None
        if self.cfg.progress_bar and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=self.max_steps, initial=self.step, desc=self.loss_name, dynamic_ncols=True)
        with self._signals():
            while self.step < self.max_steps:
                loss = self.train_step(next(batches))
                bad = ~torch.isfinite(loss)
                first_bad = torch.where(bad & (first_bad < 0), self.step, first_bad)
                total += torch.where(bad, torch.zeros_like(loss), loss)
                count += 1
                self.step += 1
                last = self.step == self.max_steps
                if self.step % log_every == 0 or last:
                    mean, bad_step, signalled = self._reduce(total, first_bad)
                    if bad_step >= 0:
                        raise NonFiniteLoss(bad_step, self.loss_name)
                    values = {
                        "train/loss": mean / count,
                        "train/lr": self.optimizer.param_groups[0]["lr"],
                        "train/steps_per_s": count / (time.perf_counter() - t0),
                    }
                    self.history["train"].append({"step": self.step, **values})
                    self.log(values, self.step)
                    if bar is not None:
                        bar.update(count)
                        bar.set_postfix(loss=f"{values['train/loss']:.4f}")
                    total.zero_()
                    count, t0 = 0, time.perf_counter()
                    if signalled:
                        self._partial = (0.0, 0)
                        self.save()
                        chain = self._previous.get(self._signal)
                        if chain is signal.default_int_handler:  # Python's Ctrl-C: nothing to pass on
                            chain = None
                        raise Interrupted(self.step, self._signal, chain)
                if self.evaluate is not None and eval_every and self.step % eval_every == 0 and not last:
                    self._periodic_eval()
                if (ckpt_every and self.step % ckpt_every == 0) or last:
                    self._partial = (total, count)
                    self.save()
        if bar is not None:
            bar.close()

    def _periodic_eval(self) -> None:
        metrics = self.evaluate(self.model)
        self.model.train()
        value = metrics["mean"].get(self.cfg.monitor)
        entry = {"step": self.step, **{f"test/{k}": v for k, v in metrics["mean"].items()}}
        self.history["eval"].append(entry)
        self.log({k: v for k, v in entry.items() if k != "step"}, self.step)
        if value is not None and math.isfinite(value) and value > self.best:
            self.best = value
            if self.rank == 0:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                best = {"fingerprint": self.fingerprint, "step": self.step}
                best["model"] = self.model.state_dict()
                with self._uninterrupted():
                    save_checkpoint(self.ckpt_dir / "best.pt", best)
