"""A small training loop: LAMB/AdamW + schedule, accumulation, clipping, DDP, atomic resumable checkpoints.

The loop is task-agnostic: a :class:`Task` builds the model, turns a batch of item indices into model inputs
and computes the loss. Files written under ``out_dir`` (by rank 0 only):

- ``checkpoint.pt``: :func:`~perceiver_io.training.checkpoint.save_training_state`, written atomically every
  ``checkpoint_every`` steps and at the end;
- ``metrics.jsonl``: one JSON object per logged step (``step``, ``loss``, ``lr``, ``grad_norm``,
  ``examples_per_s``, ``elapsed_s``) or evaluation (``eval/...`` keys);
- ``model/``: ``save_pretrained`` of the final model, plus whatever :meth:`Task.save_extras` adds;
- ``curves.png``: loss and evaluation curves (only if matplotlib is installed);
- ``tensorboard/``: the same scalars as TensorBoard event files (only if ``tensorboard`` is installed).

Randomness: before every step the global RNGs are seeded from ``(seed, rank, step)``, so augmentation, masking
and dropout of step ``k`` do not depend on what ran before. A resume is therefore exact on every rank although
only rank 0 writes the checkpoint, and one process reproduces a DDP run if the task draws nothing random.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from perceiver_io.training.checkpoint import load_training_state, save_training_state
from perceiver_io.training.data import ShardedBatches
from perceiver_io.training.optim import (
    Lamb,
    clip_by_global_norm_,
    constant_cosine_scheduler,
    param_groups,
    scaled_lr,
    warmup_cosine_scheduler,
)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"
CURVES_FILE = "curves.png"


class Task(Protocol):
    """What the trainer needs from a task recipe (see :mod:`perceiver_io.training.tasks`)."""

    n_train: int  # items that ShardedBatches shuffles

    def build_model(self) -> nn.Module:
        """A fresh model (a ``PerceiverPreTrainedModel``), built after the global RNG is seeded."""

    def batch(self, indices: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
        """Model inputs for training items ``indices`` (N,), augmented with the global RNG if ``train``."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar training loss of ``model`` (possibly DDP-wrapped: call it, don't reach into it) on ``batch``."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Held-out metrics of the bare model, e.g. ``{"accuracy": 0.97}``; ``{}`` if there is no held-out set."""

    def save_extras(self, directory: Path) -> None:
        """Write files that belong next to the saved model (e.g. ``preprocessor_config.json``)."""


@dataclass
class TrainConfig:
    """Settings of :class:`Trainer`; the ``[train]`` table of a recipe's TOML file.

    ``batch_size`` is global (summed over ranks and accumulation micro-batches). The learning rate is
    ``lr``, or ``scaled_lr(lr, batch_size)`` (lr·batch/256, DeepMind's rule) when ``scale_lr`` is true.
    ``optimizer``: ``"lamb"`` (DeepMind's, :class:`Lamb`) or ``"adamw"`` (``torch.optim.AdamW``, same betas and
    eps, decoupled weight decay on the same groups). LAMB scales each update to its tensor's norm, so
    small-norm tensors (embeddings initialised at 0.02) move slowly: a small byte MLM trained from scratch
    for minutes stays at the unigram plateau under LAMB and leaves it under AdamW (see ``configs/mlm.toml``).
    ``schedule``: ``"constant_cosine"`` (constant for ``constant_fraction`` of the steps, then cosine to 0;
    the ImageNet recipe) or ``"warmup_cosine"`` (``warmup_steps`` linear warmup, then cosine; the MLM recipe).
    ``fsdp`` (under torchrun, 2+ processes) shards parameters, gradients and optimizer state over the ranks with
    FSDP2's ``fully_shard`` instead of replicating them with DDP; checkpoints and the saved model hold the
    gathered full state, so a run may resume with or without FSDP.
    ``time_limit_s`` (0 = none) stops early, still saving the model, e.g. to bound a demo on a slow machine.
    """

    out_dir: str = "runs/train"
    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 5e-4
    scale_lr: bool = True
    weight_decay: float = 0.1
    clip_norm: float = 10.0
    optimizer: str = "lamb"
    schedule: str = "constant_cosine"
    constant_fraction: float = 0.5
    warmup_steps: int = 0
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    compile: bool = False
    fsdp: bool = False
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 100
    time_limit_s: float = 0.0
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a TOML table, rejecting unknown keys (a typo should not be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown [train] settings {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class DistributedContext:
    """Rank, world size and device of this process; world_size 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistributedContext:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1): nccl on GPU, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world_size <= 1:
        return DistributedContext(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for ``(seed, rank, step)``; distinct tuples give unrelated torch streams."""
    return ((seed * 1_000_003 + rank) * 1_000_000_007 + step) & (2**63 - 1)


class Trainer:
    """Train ``task``'s model with ``config``; call :meth:`fit`.

    Each optimizer step reads one global batch from :class:`ShardedBatches` (this rank's share:
    ``batch_size / world_size`` items), splits it into ``grad_accum`` micro-batches, averages their gradients
    (DDP also averages over ranks, so the update equals one process on the whole batch), clips the global
    gradient norm to ``clip_norm`` and applies LAMB or AdamW (weight decay skipping biases and norms, via
    :func:`param_groups`) and the schedule.
    """

    def __init__(self, task: Task, config: TrainConfig, dist_context: DistributedContext | None = None) -> None:
        self.task, self.config = task, config
        self.ctx = dist_context or init_distributed()
        per_rank, rest = divmod(config.batch_size, self.ctx.world_size * config.grad_accum)
        if rest or per_rank == 0:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by world_size {self.ctx.world_size} "
                f"× grad_accum {config.grad_accum}"
            )
        self.out_dir = Path(config.out_dir)
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = task.build_model().to(self.ctx.device)
        if config.gradient_checkpointing:
            self.model.set_gradient_checkpointing(True)
        if config.fsdp:
            if self.ctx.world_size < 2:
                raise ValueError("fsdp=true needs 2 or more processes (torchrun --nproc_per_node=N, N >= 2)")
            from torch.distributed.fsdp import fully_shard

            fully_shard(self.model)  # in place: parameters become DTensor shards, so the optimizer comes after
        lr = scaled_lr(config.lr, config.batch_size) if config.scale_lr else config.lr
        self.optimizer = self._build_optimizer(lr)
        self.scheduler = self._build_scheduler()
        self.batches = ShardedBatches(
            task.n_train, config.batch_size, config.seed, rank=self.ctx.rank, world_size=self.ctx.world_size
        )
        wrapped: nn.Module = self.model
        if self.ctx.world_size > 1 and not config.fsdp:
            wrapped = DistributedDataParallel(
                self.model, device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            )
        self.ddp = wrapped
        self.forward_model: nn.Module = torch.compile(wrapped) if config.compile else wrapped
        self.step = 0

    def _build_optimizer(self, lr: float) -> torch.optim.Optimizer:
        groups = param_groups(self.model, self.config.weight_decay)
        if self.config.optimizer == "lamb":
            return Lamb(groups, lr=lr)
        if self.config.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)
        raise ValueError(f"optimizer={self.config.optimizer!r}; expected 'lamb' or 'adamw'")

    def _build_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        cfg = self.config
        if cfg.schedule == "constant_cosine":
            return constant_cosine_scheduler(self.optimizer, cfg.steps, cfg.constant_fraction)
        if cfg.schedule == "warmup_cosine":
            return warmup_cosine_scheduler(self.optimizer, cfg.steps, cfg.warmup_steps)
        raise ValueError(f"schedule={cfg.schedule!r}; expected 'constant_cosine' or 'warmup_cosine'")

    # ----------------------------------------------------------------------------------------------- state

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_FILE

    def _full_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """FSDP: the unsharded model and optimizer state dicts, gathered on rank 0 (empty elsewhere); every
        rank must call this, it is a collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(
            self.model, self.optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )

    def unsharded_model(self) -> nn.Module | None:
        """The model as one module, to evaluate or save: the model itself, or under FSDP a plain copy on rank 0
        (None on other ranks; every rank must call it)."""
        if not self.config.fsdp:
            return self.model
        model_state, _ = self._full_state()
        if not self.ctx.is_main:
            return None
        copy = self.task.build_model()
        copy.load_state_dict(model_state)
        return copy.to(self.ctx.device)

    def save_checkpoint(self, elapsed_s: float) -> None:
        """Atomic checkpoint of model, optimizer, scheduler, batch order and RNGs (written by rank 0)."""
        model, optimizer = self._full_state() if self.config.fsdp else (self.model, self.optimizer)
        if self.ctx.is_main:
            save_training_state(
                self.checkpoint_path,
                model=model,
                optimizer=optimizer,
                scheduler=self.scheduler,
                step=self.step,
                data_state=self.batches.state_dict(),
                extra={"elapsed_s": elapsed_s, "config": json.dumps(asdict(self.config))},
            )

    def load_checkpoint(self) -> float:
        """Restore :meth:`save_checkpoint`'s file on every rank; returns the training time it had recorded."""
        sharded = self.config.fsdp
        state = load_training_state(
            self.checkpoint_path,
            None if sharded else self.model,
            self.optimizer,
            self.scheduler,
            map_location=self.ctx.device,
        )
        if sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            options = StateDictOptions(full_state_dict=True)
            set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optimizer"], options=options)  # fmt: skip
        # The stored lr follows the saved run's schedule; recompute it from this config's, so that a finished run
        # can be extended (e.g. stopped at 2 of 2 steps, resumed to 4). With the same config it is the same value.
        sched = self.scheduler
        for group, base, factor in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
            group["lr"] = base * factor(sched.last_epoch)
        self.step = state["step"]
        self.batches.load_state_dict(state["data_state"])
        return float(state["extra"].get("elapsed_s", 0.0))

    # -------------------------------------------------------------------------------------------- training

    def _global_batches(self) -> Iterator[torch.Tensor]:
        while True:
            yield from self.batches

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)

    def train_step(self, indices: torch.Tensor) -> tuple[float, float]:
        """One optimizer update on this rank's items ``indices`` (N,); returns (mean loss, grad norm).

        The loss is averaged over micro-batches here and over ranks by an all-reduce, so the logged value is
        the global batch's mean whatever the world size.
        """
        torch.manual_seed(step_seed(self.config.seed, self.ctx.rank, self.step))
        self.model.train()
        micro_batches = indices.chunk(self.config.grad_accum)
        total = torch.zeros((), device=self.ctx.device)
        for i, micro in enumerate(micro_batches):
            batch = {k: v.to(self.ctx.device) for k, v in self.task.batch(micro, train=True).items()}
            last = i == len(micro_batches) - 1
            # Gradients are all-reduced (FSDP: reduce-scattered) once per step, on the last micro-batch.
            sync = contextlib.nullcontext()
            if self.config.fsdp:
                self.model.set_requires_gradient_sync(last)
            elif not last and self.ctx.world_size > 1:
                sync = self.ddp.no_sync()
            with sync:
                with self._autocast():
                    loss = self.task.loss(self.forward_model, batch) / len(micro_batches)
                loss.backward()
            total += loss.detach().float()
        grad_norm = clip_by_global_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ctx.world_size > 1:
            dist.all_reduce(total)
            total /= self.ctx.world_size
        self.step += 1
        return total.item(), float(grad_norm)

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """The task's held-out metrics of ``model`` (default: the bare model), in eval mode, without gradients."""
        model = self.model if model is None else model
        model.eval()
        with torch.no_grad(), self._autocast():
            return self.task.evaluate(model)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.steps`` (or ``time_limit_s``), resuming from ``checkpoint.pt`` if ``resume``.

        Returns:
            ``{"step", "loss", "elapsed_s", "examples_per_s"}`` plus the final evaluation's metrics.
        """
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        elapsed = self.load_checkpoint() if resume and self.checkpoint_path.exists() else 0.0
        log = MetricsLog(self.out_dir / METRICS_FILE, enabled=self.ctx.is_main, keep_until=self.step)
        bar = _progress_bar(cfg.steps, self.step, enabled=cfg.progress and self.ctx.is_main)
        batches = self._global_batches()
        loss, examples, window_start = math.nan, 0, time.perf_counter()
        run_start = window_start - elapsed
        while self.step < cfg.steps:
            if cfg.time_limit_s and time.perf_counter() - run_start > cfg.time_limit_s:
                break
            lr = self.scheduler.get_last_lr()[0]
            loss, grad_norm = self.train_step(next(batches))
            examples += cfg.batch_size
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                now = time.perf_counter()
                rate = examples / max(now - window_start, 1e-9)
                record = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm}
                log.write({**record, "examples_per_s": rate, "elapsed_s": now - run_start})
                bar.set_postfix(loss=f"{loss:.4f}", ex_per_s=f"{rate:.0f}", refresh=False)
                examples, window_start = 0, now
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self._log_eval(log)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint(time.perf_counter() - run_start)
            bar.update(1)
        bar.close()
        elapsed = time.perf_counter() - run_start
        self.save_checkpoint(elapsed)
        summary = {"step": self.step, "loss": loss, "elapsed_s": elapsed}
        summary.update(self._log_eval(log))
        log.close()
        self._save_final()
        return summary

    def _log_eval(self, log: MetricsLog) -> dict[str, float]:
        model = self.unsharded_model()
        metrics = {f"eval/{k}": v for k, v in self.evaluate(model).items()} if self.ctx.is_main else {}
        if metrics:
            log.write({"step": self.step, **metrics})
        return metrics

    def _save_final(self) -> None:
        model = self.unsharded_model()
        if self.ctx.is_main:
            model_dir = self.out_dir / MODEL_DIR
            model.save_pretrained(model_dir)
            self.task.save_extras(model_dir)
            plot_curves(self.out_dir / METRICS_FILE, self.out_dir / CURVES_FILE)
        if self.ctx.world_size > 1:
            dist.barrier()  # other ranks must not exit (and tear down the group) while rank 0 writes


class MetricsLog:
    """Append-only JSONL; on resume, records past the checkpoint's step (written before a crash) are dropped.

    Each record's numbers also go to TensorBoard (``tensorboard/`` beside the JSONL) if it is installed; its
    event files are append-only, so after a resume they may repeat the steps past the checkpoint.
    """

    def __init__(self, path: Path, enabled: bool, keep_until: int) -> None:
        self.path, self.enabled = path, enabled
        self.tensorboard = _tensorboard_writer(path.parent / "tensorboard") if enabled else None
        if enabled and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= keep_until]
            path.write_text("".join(line + "\n" for line in kept))
        elif enabled:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(directory: Path) -> Any:
    """A ``SummaryWriter`` on ``directory``, or None if TensorBoard is not installed (torch's wrapper raises
    ImportError without the ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(directory))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on stderr, or a silent stand-in when disabled or tqdm is not installed."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=initial, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path) -> bool:
    """Training loss and each ``eval/`` metric against step as a PNG; False if matplotlib is missing.

    A metric ``eval/X_baseline`` is drawn dashed on the axes of ``eval/X`` (e.g. the unigram bits per byte
    under the model's), not on axes of its own.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on training machines
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = read_metrics(metrics_path)
    train = [r for r in records if "loss" in r]
    all_keys = {k for r in records for k in r if k.startswith("eval/")}
    eval_keys = sorted(k for k in all_keys if not (k.endswith("_baseline") and k.removesuffix("_baseline") in all_keys))
    fig, axes = plt.subplots(1, 1 + len(eval_keys), figsize=(5 * (1 + len(eval_keys)), 3.5), squeeze=False)
    axes[0, 0].plot([r["step"] for r in train], [r["loss"] for r in train])
    axes[0, 0].set(xlabel="step", ylabel="training loss", yscale="log")
    for ax, key in zip(axes[0, 1:], eval_keys, strict=True):
        for name, style in ((key, {"marker": "o"}), (f"{key}_baseline", {"linestyle": "--", "color": "grey"})):
            points = [(r["step"], r[name]) for r in records if name in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=name.removeprefix("eval/"), **style)
        ax.set(xlabel="step", ylabel=key)
        if f"{key}_baseline" in all_keys:
            ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True
