"""The one training loop: fine-tuning, distillation and QAT all call ``fit`` with their own loss.

Batches are cut straight from the in-memory tensors of ``data.train`` with a seeded permutation per
epoch (no DataLoader: the data sets fit in memory and indexing is the fastest loader there is).
Every epoch is checkpointed atomically to ``out_dir/checkpoint.safetensors`` with the model,
optimizer, scheduler and every RNG state, so ``resume=True`` ends with exactly the weights of an
uninterrupted run. Under ``torchrun`` the loop runs data parallel (see ``distributed.py``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netshrink.core.errors import ConfigError, NetshrinkError, NetshrinkFormatError
from netshrink.data import Dataset, random_crop_flip
from netshrink.measure.accuracy import evaluate
from netshrink.train import distributed
from netshrink.train.callbacks import Callback, StepInfo
from netshrink.train.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    save_checkpoint,
    save_model,
)
from netshrink.train.config import FitConfig

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, x, y) -> scalar``: a mean over the batch (``x`` lets a teacher see the input)."""

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"
_STATUS_EVERY = 20  # steps between progress-bar updates (each one waits for the device)


@dataclasses.dataclass
class FitResult:
    """Per-epoch ``history`` (epoch, train_loss, train_acc, val_acc or None when not evaluated,
    lr, seconds incl. evaluation, samples_per_s of training), the last ``val_acc`` (None only
    when the validation split is empty) and the trained ``model`` (the caller's module, on the
    training device)."""

    history: list[dict[str, Any]]
    val_acc: float | None
    model: nn.Module


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """The default loss: cross-entropy with label smoothing (Szegedy et al. 2016, sec. 7)."""

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)

    return loss_fn


def make_optimizer(params: Any, config: FitConfig) -> torch.optim.Optimizer:
    """SGD with momentum, Adam or AdamW as the config names."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, config: FitConfig, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` at optimizer step ``step``: linear warm-up, then the schedule.

    Cosine decays per step from 1 to 0 over the steps after warm-up (Loshchilov & Hutter 2017,
    without restarts); step multiplies by 0.1 at 50% and 75% of the steps (per step, so short
    runs of one or two epochs get both stages too).
    """
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    if config.schedule == "step":
        return 0.1 ** sum(step >= f * total for f in (0.5, 0.75))
    return 1.0


def fit(model: nn.Module, data: Dataset, config: FitConfig, loss_fn: LossFn | None = None,
        out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
        device: str = "cpu", callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train ``model`` in place on ``data.train``, evaluating on ``data.val`` (never ``test``).

    Args:
        model: any module mapping ``data.train.x`` batches to logits.
        data: the data set; only ``train`` and ``val`` are used.
        config: epochs, batch size, optimizer, schedule, augmentation, seed.
        loss_fn: ``loss_fn(logits, x, y)``; default cross-entropy with ``config.label_smoothing``.
        out_dir: where ``checkpoint.safetensors`` (every epoch) and ``model.safetensors`` (at
            the end) are written; nothing is written when None.
        resume: continue after the last completed epoch in ``out_dir``'s checkpoint (start
            afresh when there is none). The result is bit-identical to an uninterrupted run on
            the same machine and thread count.
        progress: a tqdm bar per epoch (rank 0 only).
        device: ``"cpu"`` or ``"cuda"`` (under torchrun, each rank takes ``cuda:LOCAL_RANK``).
        callbacks: hooks called around every step and after every epoch (``callbacks.py``).

    ``fit`` seeds the global torch RNG with ``config.seed`` (plus the rank) so dropout repeats.
    """
    info, dev = distributed.setup(device)
    try:
        return _fit(model, data, config, loss_fn or cross_entropy(config.label_smoothing),
                    Path(out_dir) if out_dir is not None else None, resume, progress, info, dev,
                    tuple(callbacks))
    finally:
        if info.created_group:
            torch.distributed.destroy_process_group()


class _Randomness:
    """The three random streams of a run: batch order (same on every rank), augmentation and the
    global RNG (dropout), the last two per rank. Saved per rank so a resumed run repeats them."""

    def __init__(self, seed: int, info: distributed.DistInfo, device: torch.device) -> None:
        self.info, self.device = info, device
        torch.manual_seed(seed + info.rank)
        self.permutation = torch.Generator().manual_seed(seed)
        self.augment = torch.Generator().manual_seed(seed + 1 + info.rank)

    def _local(self) -> dict[str, torch.Tensor]:
        states = {"augment": self.augment.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def state(self) -> dict[str, torch.Tensor]:
        """``rng.permutation`` plus ``rng.<stream>.<rank>`` for every rank (a collective call)."""
        out = {"rng.permutation": self.permutation.get_state()}
        for name, state in self._local().items():
            for rank, part in enumerate(distributed.all_gather(state, self.info, self.device)):
                out[f"rng.{name}.{rank}"] = part
        return out

    def restore(self, tensors: dict[str, torch.Tensor], source: Path) -> None:
        rank = self.info.rank
        needed = ["rng.permutation", f"rng.augment.{rank}", f"rng.torch.{rank}"]
        if self.device.type == "cuda":
            needed.append(f"rng.cuda.{rank}")
        missing = [k for k in needed if k not in tensors]
        if missing:
            raise NetshrinkFormatError(f"{source} lacks RNG state {missing}; it cannot be resumed")
        try:
            self.permutation.set_state(tensors["rng.permutation"])
            self.augment.set_state(tensors[f"rng.augment.{rank}"])
            torch.set_rng_state(tensors[f"rng.torch.{rank}"])
            if self.device.type == "cuda":
                torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], self.device)
        except (TypeError, RuntimeError, ValueError) as exc:
            raise NetshrinkFormatError(f"{source} holds a malformed RNG state ({type(exc).__name__}: "
                                       f"{exc}); it cannot be resumed") from None


def _global_batches(n: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    # a trailing batch too small to give every rank a sample is skipped (only possible under DDP)
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)
            if min(s + batch_size, n) - s >= world_size]


def _resume_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LambdaLR, rng: _Randomness,
                  config: FitConfig, world_size: int) -> tuple[int, list[dict[str, Any]]]:
    tensors, meta = load_checkpoint(path)
    if meta["format"] != CHECKPOINT_FORMAT:
        raise NetshrinkFormatError(f"{path} is a model file, not a training checkpoint")
    if meta.get("fit_config") != config.to_dict():
        raise ConfigError(f"{path} was written with a different FitConfig ({meta.get('fit_config')}); "
                          "resume with the same config or use a new out_dir")
    if meta.get("world_size") != world_size:
        raise ConfigError(f"{path} was written by {meta.get('world_size')} process(es); resume with "
                          f"the same number (this run has {world_size})")
    epoch, history, sched = meta.get("epoch"), meta.get("history"), meta.get("scheduler")
    if not isinstance(epoch, int) or not isinstance(history, list) or not isinstance(sched, dict):
        raise NetshrinkFormatError(f"{path} lacks epoch, history or scheduler state")
    load_model_state(model, tensors, meta, path)
    load_optimizer_state(optimizer, tensors, meta, path)
    scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(optimizer.param_groups)})
    rng.restore(tensors, path)
    return epoch, history


def _fit(model: nn.Module, data: Dataset, config: FitConfig, loss_fn: LossFn, out_dir: Path | None,
         resume: bool, progress: bool, info: distributed.DistInfo, dev: torch.device,
         callbacks: tuple[Callback, ...]) -> FitResult:
    from tqdm.auto import tqdm

    distributed.check_batch(config.batch_size, info)
    if resume and out_dir is None:
        raise ConfigError("resume needs out_dir (the folder holding checkpoint.safetensors)")
    model.to(dev)
    rng = _Randomness(config.seed, info, dev)
    # without augmentation the whole training split lives on the device; the augmentation
    # draws its randomness on the CPU, so then batches are cut and augmented there, then moved
    data_dev = torch.device("cpu") if config.augment else dev
    train_x, train_y = data.train.x.to(data_dev), data.train.y.to(data_dev)
    batches = _global_batches(len(train_y), config.batch_size, info.world_size)
    if not batches:
        raise ConfigError(f"the training split has {len(train_y)} samples, too few for "
                          f"{info.world_size} processes")
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config, len(batches)))
    checkpoint = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    start, history = 0, []
    if resume and checkpoint is not None and checkpoint.is_file():
        start, history = _resume_state(checkpoint, model, optimizer, scheduler, rng, config,
                                       info.world_size)
    net = distributed.wrap(model, info, dev)
    show = progress and info.is_main

    for epoch in range(start + 1, config.epochs + 1):
        began = time.perf_counter()
        net.train()
        order = torch.randperm(len(train_y), generator=rng.permutation).to(data_dev)
        totals = torch.zeros(3, dtype=torch.float64, device=dev)  # loss sum, correct, samples
        seen = 0  # this rank's samples so far
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                   disable=not show, leave=True)
        for step, (lo, hi) in enumerate(batches, 1):
            where = StepInfo(epoch, (epoch - 1) * len(batches) + step - 1, len(batches),
                             config.epochs * len(batches))
            for callback in callbacks:
                callback.on_step_begin(model, where)
            index = distributed.local_share(order[lo:hi], info)
            x, y = train_x[index], train_y[index]
            if config.augment:
                x = random_crop_flip(x, rng.augment)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            logits = net(x)
            loss = loss_fn(logits, x, y)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over ranks; weighting each rank's mean by its share of the
            # global batch makes that average the gradient of the global-batch mean
            (loss * (len(y) * info.world_size / (hi - lo)) if info.world_size > 1 else loss).backward()
            optimizer.step()
            scheduler.step()
            for callback in callbacks:
                callback.on_step_end(model, where)
            seen += len(y)
            totals[0] += loss.detach().double() * len(y)
            totals[1] += (logits.detach().argmax(1) == y).sum()
            if step % _STATUS_EVERY == 0 or step == len(batches):
                loss_sum, correct, _ = totals.tolist()
                if not math.isfinite(loss_sum):
                    raise NetshrinkError(f"training diverged (loss is {loss_sum} in epoch {epoch}); "
                                         "lower lr or check the data")
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                samples_s=f"{seen * info.world_size / (time.perf_counter() - began):.0f}")
        bar.close()
        for callback in callbacks:
            callback.on_epoch_end(model, StepInfo(epoch, epoch * len(batches), len(batches),
                                                  config.epochs * len(batches)))
        train_seconds = time.perf_counter() - began
        totals[2] = seen
        loss_sum, correct, seen = distributed.all_reduce_sum(totals, info).tolist()
        evaluated = len(data.val) > 0 and (epoch % config.eval_every == 0 or epoch == config.epochs)
        val_acc = evaluate(model, data.val, device=dev) if evaluated else None
        history.append({"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                        "val_acc": val_acc, "lr": scheduler.get_last_lr()[0],
                        "seconds": time.perf_counter() - began, "samples_per_s": seen / train_seconds})
        if checkpoint is not None:
            rng_state = rng.state()  # collective: every rank takes part
            if info.is_main:
                save_checkpoint(checkpoint, model, optimizer, scheduler, extra={
                    **rng_state, "epoch": epoch, "fit_config": config.to_dict(),
                    "history": history, "world_size": info.world_size})
    if out_dir is not None and info.is_main:
        save_model(out_dir / MODEL_NAME, model)
    if info.enabled:
        torch.distributed.barrier()
    return FitResult(history=history, val_acc=history[-1]["val_acc"], model=model)
