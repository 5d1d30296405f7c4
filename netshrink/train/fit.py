"""The one training loop: fine-tuning, distillation and QAT all call ``fit`` with their own loss.

Training data is either in memory (a netshrink ``Dataset`` or ``Split``: batches are cut by
indexing its tensors, the fastest loader there is) or a map-style torch ``Dataset`` of ``(x, y)``
pairs, or a ``DataLoader`` over one, for data that does not fit in memory; both follow one seeded
order (``batches.py``). Every epoch, and optionally every ``checkpoint_every_steps`` steps, is
checkpointed atomically to ``out_dir/checkpoint.safetensors`` with the model, optimizer, scheduler,
every RNG state and a fingerprint of the training data, so ``resume=True`` ends with exactly the
weights of an uninterrupted run (see ``FitConfig.deterministic`` for the kernels this needs). Under
``torchrun`` the loop runs data parallel (see ``distributed.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from netshrink.core.config import Config
from netshrink.core.errors import ConfigError, NetshrinkError, NetshrinkFormatError
from netshrink.core.model_io import Inputs, batch_length, call_model, map_tensors, output_tensor
from netshrink.data import Dataset, Split, random_crop_flip
from netshrink.measure.accuracy import evaluate
from netshrink.train import distributed
from netshrink.train.batches import (
    LoaderBatches,
    ShardedBatches,
    TensorBatches,
    as_source,
    evaluate_pairs,
    global_batches,
)
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
from netshrink.train.progress import Progress

LossFn = Callable[[torch.Tensor, Any, torch.Tensor | None], torch.Tensor]
"""``loss_fn(logits, x, y) -> scalar``: a mean over the batch (``x`` lets a teacher see the input;
``y`` is None on unlabeled data, ``x`` a dict of keyword inputs for Hugging Face models)."""

TrainData = Dataset | Split | TorchDataset | DataLoader
"""What ``fit`` trains on: see ``fit``'s ``data`` argument."""

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"
_STATUS_EVERY = 20  # steps between divergence checks and progress updates (each waits for the device)


@dataclasses.dataclass
class FitResult:
    """Per-epoch ``history`` (epoch, train_loss, train_acc (None on unlabeled data), val_acc or None when not evaluated,
    lr, seconds incl. evaluation, samples_per_s of training), the last ``val_acc`` (None when
    there is no validation data) and the trained ``model`` (the caller's module, on the
    training device)."""

    history: list[dict[str, Any]]
    val_acc: float | None
    model: nn.Module


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    """The default loss: cross-entropy with label smoothing (Szegedy et al. 2016, sec. 7)."""

    def loss_fn(logits: torch.Tensor, x: Any, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ConfigError("the training data has no labels; give (x, y) pairs, or recover from a teacher "
                              "(netshrink.distillation.recover), whose loss needs none")
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


def fit(model: nn.Module, data: TrainData, config: FitConfig, loss_fn: LossFn | None = None,
        out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
        device: str = "cpu", callbacks: Sequence[Callback] = (),
        val: Split | TorchDataset | DataLoader | None = None) -> FitResult:
    """Train ``model`` in place on the training data, evaluating on the validation data (never test).

    Args:
        model: any module mapping a batch of inputs to logits (B, classes), or (B, ..., classes)
            for per-token labels (B, ...). Dict inputs are passed as keywords and the main tensor
            of an output object is read (``core.model_io``: a ``ModelOutput``'s ``logits``).
        data: the training data, one of
            - a netshrink ``Dataset``: trains on ``data.train``, validates on ``data.val``;
            - a netshrink ``Split``: in-memory tensors, validated on ``val``;
            - a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs (image
              folders too large for memory, token ids, a user's own pipeline), read by a
              DataLoader in fit's seeded order, each process reading only its share; or whose
              items are unlabeled inputs (a tensor or a dict of tensors), for a ``loss_fn`` that
              needs no labels (recovery from a teacher); ``train_acc`` is then None;
            - a ``DataLoader`` over such a Dataset: its loading options (``num_workers``,
              ``collate_fn``, ``pin_memory``, ...) are used, its ``batch_size`` must equal
              ``config.batch_size``, and it may have no sampler of its own (fit orders the data).
            The same samples give the same weights whichever form holds them.
        config: epochs, batch size, optimizer, schedule, augmentation, seed, checkpointing.
        loss_fn: ``loss_fn(logits, x, y)``; default cross-entropy with ``config.label_smoothing``.
        out_dir: where ``checkpoint.safetensors`` (every epoch, and every
            ``config.checkpoint_every_steps`` steps) and ``model.safetensors`` (at the end) are
            written; nothing is written when None.
        resume: continue from ``out_dir``'s checkpoint (start afresh when there is none), at an
            epoch end or mid-epoch. The result is bit-identical to an uninterrupted run on the same
            machine and thread count when the kernels are deterministic (``config.deterministic``;
            on CUDA this needs it). A checkpoint of another config, process count or training data
            (by its fingerprint) is refused. Random transforms inside a Dataset repeat too: with
            ``num_workers=0`` they draw from the saved global RNG; DataLoader workers are seeded
            per epoch, so theirs repeat when resumed at an epoch end (``LoaderBatches.epoch``).
        progress: rank 0 shows a bar per epoch on a terminal, else prints one line per epoch.
        device: ``"cpu"`` or ``"cuda"`` (under torchrun, each rank takes ``cuda:LOCAL_RANK``).
        callbacks: hooks called around every step and after every epoch (``callbacks.py``), on
            resume from the next step on with the same ``StepInfo`` as an uninterrupted run.
        val: the validation data when ``data`` is not a netshrink ``Dataset`` (which brings its
            own ``val``): a ``Split``, a Dataset of pairs or a DataLoader over one (its loading
            options and batch size are used); None evaluates nothing (``val_acc`` None).

    ``fit`` seeds the global torch RNG with ``config.seed`` (plus the rank) so dropout repeats.
    """
    info, dev = distributed.setup(device)
    try:
        with _algorithms(config.deterministic):
            return _fit(model, data, val, config, loss_fn or cross_entropy(config.label_smoothing),
                        Path(out_dir) if out_dir is not None else None, resume, progress, info, dev,
                        tuple(callbacks))
    except BaseException as exc:
        if info.created_group:
            # The traceback keeps _fit's frame, so its DDP wrapper and the process group, alive
            # until the interpreter exits; then one rank now and then ended in std::terminate
            # (SIGABRT, "terminate called without an active exception") after printing the error:
            # 4 of 160 two-rank diverging runs on a loaded 2-core machine, 0 of 280 with the
            # frames' locals dropped here, so destroy_process_group frees them now.
            traceback.clear_frames(exc.__traceback__)
            gc.collect()
        raise
    finally:
        if info.created_group:
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def _algorithms(deterministic: bool) -> Iterator[None]:
    """Deterministic kernels for the run when asked (``FitConfig.deterministic``), then the caller's."""
    if not deterministic:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    # cuBLAS is deterministic only with a fixed workspace (CUDA docs, "Results reproducibility")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


class _Randomness:
    """The three random streams of a run: batch order (same on every rank), augmentation and the
    global RNG (dropout), the last two per rank. Saved per rank so a resumed run repeats them."""

    def __init__(self, seed: int, info: distributed.DistInfo, device: torch.device) -> None:
        self.info, self.device = info, device
        torch.manual_seed(seed + info.rank)
        self.permutation = torch.Generator().manual_seed(seed)
        self.augment = torch.Generator().manual_seed(seed + 1 + info.rank)
        self.epoch_start = self.permutation.get_state()

    def epoch_order(self, n: int) -> torch.Tensor:
        """This epoch's order of the ``n`` training samples (the generator's state before drawing
        it is kept: a checkpoint in the middle of the epoch saves that, to draw it again)."""
        self.epoch_start = self.permutation.get_state()
        return torch.randperm(n, generator=self.permutation)

    def _local(self) -> dict[str, torch.Tensor]:
        states = {"augment": self.augment.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def state(self, within_epoch: bool) -> dict[str, torch.Tensor]:
        """``rng.permutation`` plus ``rng.<stream>.<rank>`` for every rank (a collective call)."""
        out = {"rng.permutation": self.epoch_start if within_epoch else self.permutation.get_state()}
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


@dataclasses.dataclass
class _Resumed:
    """Where a checkpoint left off: ``epoch`` epochs done plus ``step`` steps of the next, with
    this rank's running ``totals`` of that epoch (None at an epoch end)."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    totals: torch.Tensor | None = None


def _saved_config(meta: dict[str, Any]) -> FitConfig | None:
    try:  # from_dict fills fields added since the checkpoint was written with their defaults
        saved = Config.from_dict(meta.get("fit_config"))
    except (ConfigError, TypeError, ValueError):
        return None
    return saved if isinstance(saved, FitConfig) else None


def _resume_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: torch.optim.lr_scheduler.LambdaLR, rng: _Randomness, config: FitConfig,
                  info: distributed.DistInfo, steps_per_epoch: int, fingerprint: str) -> _Resumed:
    tensors, meta = load_checkpoint(path)
    if meta["format"] != CHECKPOINT_FORMAT:
        raise NetshrinkFormatError(f"{path} is a model file, not a training checkpoint")
    saved = _saved_config(meta)
    if saved is None or not saved.trains_like(config):
        raise ConfigError(f"{path} was written with a different FitConfig ({meta.get('fit_config')}); "
                          "resume with the same config or use a new out_dir")
    if meta.get("world_size") != info.world_size:
        raise ConfigError(f"{path} was written by {meta.get('world_size')} process(es); resume with "
                          f"the same number (this run has {info.world_size})")
    if meta.get("data_fingerprint", fingerprint) != fingerprint:  # checkpoints before fingerprints: not checked
        raise ConfigError(f"{path} was written for other training data (fingerprint {meta['data_fingerprint']}, "
                          f"this data {fingerprint}); resume on the same data or use a new out_dir")
    epoch, step, history = meta.get("epoch"), meta.get("step_in_epoch", 0), meta.get("history")
    sched = meta.get("scheduler")
    if not isinstance(epoch, int) or not isinstance(history, list) or not isinstance(sched, dict):
        raise NetshrinkFormatError(f"{path} lacks epoch, history or scheduler state")
    if not isinstance(step, int) or not 0 <= step < steps_per_epoch:
        raise NetshrinkFormatError(f"{path} stops at step {step!r} of an epoch of {steps_per_epoch}; "
                                   "it cannot be resumed")
    totals = tensors.get(f"totals.{info.rank}") if step else None
    if step and (totals is None or totals.shape != (4,) or totals.dtype != torch.float64):
        raise NetshrinkFormatError(f"{path} stops mid-epoch but lacks this rank's running totals")
    load_model_state(model, tensors, meta, path)
    load_optimizer_state(optimizer, tensors, meta, path)
    scheduler.load_state_dict({**sched, "lr_lambdas": [None] * len(optimizer.param_groups)})
    rng.restore(tensors, path)
    return _Resumed(epoch, step, history, totals)


def _training_data(data: Any, val: Any, config: FitConfig) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    """``(train, loading options, val, its loading options)``; train and val are Splits or Datasets."""
    if isinstance(data, Dataset):
        if val is not None:
            raise ConfigError("data is a netshrink Dataset, which brings its own val split; pass val= only "
                              "with a Split, a torch Dataset or a DataLoader")
        return data.train, {}, data.val, {}
    train, options = as_source(data, "data", config.batch_size)
    if val is None:
        return train, options, None, {}
    val_data, val_options = as_source(val, "val", None)
    return train, options, val_data, val_options


class _Checkpointer:
    """Writes ``out_dir/checkpoint.safetensors`` at epoch ends and, if asked, every N steps."""

    def __init__(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LambdaLR, rng: _Randomness, config: FitConfig,
                 info: distributed.DistInfo, dev: torch.device, fingerprint: str) -> None:
        self.path, self.model, self.optimizer, self.scheduler, self.rng = path, model, optimizer, scheduler, rng
        self.config, self.info, self.dev, self.fingerprint = config, info, dev, fingerprint

    def save(self, epochs_done: int, step: int, history: list[dict[str, Any]], totals: torch.Tensor | None) -> None:
        """A collective call: every rank takes part, rank 0 writes. ``step`` > 0: that many steps
        of epoch ``epochs_done + 1`` are done, and every rank's running ``totals`` are kept."""
        extra: dict[str, Any] = self.rng.state(within_epoch=step > 0)
        if totals is not None:
            for rank, part in enumerate(distributed.all_gather(totals, self.info, self.dev)):
                extra[f"totals.{rank}"] = part
        if self.info.is_main:
            save_checkpoint(self.path, self.model, self.optimizer, self.scheduler, extra={
                **extra, "epoch": epochs_done, "step_in_epoch": step, "fit_config": self.config.to_dict(),
                "history": history, "world_size": self.info.world_size, "data_fingerprint": self.fingerprint})


class _EpochTotals:
    """This rank's running loss sum, samples, correct predictions and targets of an epoch; the
    counts the host knows stay Python numbers (no device op per step)."""

    def __init__(self, dev: torch.device, resumed: torch.Tensor | None) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=dev)  # loss sum, correct
        self.samples = self.targets = 0
        if resumed is not None:  # a checkpoint's ``running()`` (mid-epoch resume)
            self.sums.copy_(resumed[[0, 2]])
            self.samples, self.targets = int(resumed[1]), int(resumed[3])

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor | None, samples: int) -> None:
        self.sums[0] += loss.detach().double() * samples
        self.samples += samples
        if y is not None:  # unlabeled data counts no correct predictions
            self.sums[1] += (logits.detach().argmax(-1) == y).sum()
            self.targets += y.numel()

    def running(self) -> torch.Tensor:
        """``[loss sum, samples, correct, targets]`` on the device (float64), as checkpoints keep them."""
        return torch.stack([self.sums[0], self.sums.new_tensor(self.samples), self.sums[1],
                            self.sums.new_tensor(self.targets)])

    def summed(self, info: distributed.DistInfo) -> list[float]:
        """``running()`` summed over ranks (a collective call)."""
        return distributed.all_reduce_sum(self.running(), info).tolist()


@dataclasses.dataclass
class _Run:
    """The parts of one training run, built once by ``_setup``; ``net`` is ``model`` as trained
    (DDP-wrapped under torchrun) and ``history`` the rows of the epochs done."""

    model: nn.Module
    net: nn.Module
    config: FitConfig
    loss_fn: LossFn
    info: distributed.DistInfo
    dev: torch.device
    callbacks: tuple[Callback, ...]
    train: Any
    val: Any
    val_options: dict[str, Any]
    batches: list[tuple[int, int]]
    sampler: ShardedBatches
    source: TensorBatches | LoaderBatches
    rng: _Randomness
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    checkpointer: _Checkpointer | None
    shown: Progress
    history: list[dict[str, Any]]

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch."""
        return len(self.batches)

    def step_info(self, epoch: int, step: int) -> StepInfo:
        """Where step ``step`` (1-based) of epoch ``epoch`` is in the run."""
        return StepInfo(epoch, (epoch - 1) * self.steps + step - 1, self.steps, self.config.epochs * self.steps)


def _fit(model: nn.Module, data: Any, val: Any, config: FitConfig, loss_fn: LossFn, out_dir: Path | None,
         resume: bool, progress: bool, info: distributed.DistInfo, dev: torch.device,
         callbacks: tuple[Callback, ...]) -> FitResult:
    run, resumed = _setup(model, data, val, config, loss_fn, out_dir, resume, progress, info, dev, callbacks)
    for epoch in range(resumed.epoch + 1, config.epochs + 1):
        first = resumed.step if epoch == resumed.epoch + 1 else 0  # steps already done (mid-epoch resume)
        _train_epoch(run, epoch, first, resumed.totals if first else None)
    if out_dir is not None and info.is_main:
        save_model(out_dir / MODEL_NAME, model)
    if info.enabled:
        torch.distributed.barrier()
    history = run.history
    return FitResult(history=history, val_acc=history[-1]["val_acc"] if history else None, model=model)


def _setup(model: nn.Module, data: Any, val: Any, config: FitConfig, loss_fn: LossFn, out_dir: Path | None,
           resume: bool, progress: bool, info: distributed.DistInfo, dev: torch.device,
           callbacks: tuple[Callback, ...]) -> tuple[_Run, _Resumed]:
    """Check the arguments, build the data order, optimizer, schedule and checkpointer, and load the
    checkpoint when resuming; returns the run and where it starts."""
    distributed.check_batch(config.batch_size, info)
    if resume and out_dir is None:
        raise ConfigError("resume needs out_dir (the folder holding checkpoint.safetensors)")
    train, options, val, val_options = _training_data(data, val, config)
    model.to(dev)
    rng = _Randomness(config.seed, info, dev)
    batches = global_batches(len(train), config.batch_size, info.world_size)
    if not batches:
        raise ConfigError(f"the training data has {len(train)} samples, too few for "
                          f"{info.world_size} processes")
    sampler = ShardedBatches(batches, info)
    source = _batch_source(train, options, sampler, config, dev)
    steps = len(batches)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, steps))
    checkpoint = out_dir / CHECKPOINT_NAME if out_dir is not None else None
    checkpointer = None
    resumed = _Resumed()
    if checkpoint is not None:
        checkpointer = _Checkpointer(checkpoint, model, optimizer, scheduler, rng, config, info, dev,
                                     source.fingerprint())
        if resume and checkpoint.is_file():
            resumed = _resume_state(checkpoint, model, optimizer, scheduler, rng, config, info, steps,
                                    checkpointer.fingerprint)
    net = distributed.wrap(model, info, dev)
    run = _Run(model=model, net=net, config=config, loss_fn=loss_fn, info=info, dev=dev, callbacks=callbacks,
               train=train, val=val, val_options=val_options, batches=batches, sampler=sampler, source=source,
               rng=rng, optimizer=optimizer, scheduler=scheduler, checkpointer=checkpointer,
               shown=Progress(progress and info.is_main, config.epochs), history=resumed.history)
    return run, resumed


def _batch_source(train: Any, options: dict[str, Any], sampler: ShardedBatches, config: FitConfig,
                  dev: torch.device) -> TensorBatches | LoaderBatches:
    """Batches cut from in-memory tensors (on the CPU when augmentation draws there), or read by a
    DataLoader from a Dataset of pairs."""
    if isinstance(train, Split):
        return TensorBatches(train, sampler, torch.device("cpu") if config.augment else dev)
    return LoaderBatches(train, options, sampler, config.seed)


def _train_epoch(run: _Run, epoch: int, first: int, resumed_totals: torch.Tensor | None) -> None:
    """Train epoch ``epoch`` from step ``first + 1`` on, then end it (evaluation, history row,
    checkpoint)."""
    began = time.perf_counter()
    run.net.train()
    run.sampler.set_epoch(epoch, run.rng.epoch_order(len(run.train)), first)
    totals = _EpochTotals(run.dev, resumed_totals)
    samples_before = run.batches[first - 1][1] if first else 0
    run.shown.start_epoch(epoch, run.steps, first)
    for step, (x, y) in enumerate(run.source.epoch(), first + 1):
        lo, hi = run.batches[step - 1]
        where = run.step_info(epoch, step)
        _train_step(run, x, y, where, hi - lo, totals)
        if step % _STATUS_EVERY == 0 or step == run.steps:
            _show_status(run, epoch, step, totals, hi - samples_before, began)
        every = run.config.checkpoint_every_steps
        if run.checkpointer is not None and every and step < run.steps and (where.step + 1) % every == 0:
            run.checkpointer.save(epoch - 1, step, run.history, totals.running())
    _end_epoch(run, epoch, totals, began, samples_before)


def _train_step(run: _Run, x: Inputs, y: torch.Tensor | None, where: StepInfo, global_batch: int,
                totals: _EpochTotals) -> None:
    """One optimizer step on this rank's share ``(x, y)`` of a global batch of ``global_batch``
    samples (``y`` None for unlabeled data)."""
    for callback in run.callbacks:
        callback.on_step_begin(run.model, where)
    if run.config.augment:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"augment crops and flips image batches (B, C, H, W); these batches "
                              f"are {shape}; train without augment")
        x = random_crop_flip(x, run.rng.augment)
    x = map_tensors(x, lambda t: t.to(run.dev, non_blocking=True))
    y = y.to(run.dev, non_blocking=True) if y is not None else None
    logits = output_tensor(call_model(run.net, x))
    loss = run.loss_fn(logits, x, y)
    run.optimizer.zero_grad(set_to_none=True)
    # DDP averages gradients over ranks; weighting each rank's mean by its share of the
    # global batch makes that average the gradient of the global-batch mean
    world = run.info.world_size
    samples = batch_length(x)
    (loss * (samples * world / global_batch) if world > 1 else loss).backward()
    run.optimizer.step()
    run.scheduler.step()
    for callback in run.callbacks:
        callback.on_step_end(run.model, where)
    totals.add(loss, logits, y, samples)


def _show_status(run: _Run, epoch: int, step: int, totals: _EpochTotals, samples_done: int, began: float) -> None:
    """Stop on a diverged loss and update the progress display (a collective call: the totals are
    summed over ranks, so every rank sees a divergence on any rank and stops together)."""
    loss_sum, n, correct, m = totals.summed(run.info)
    if not math.isfinite(loss_sum):
        raise NetshrinkError(f"training diverged (loss is {loss_sum} in epoch {epoch}); "
                             "lower lr or check the data")
    run.shown.step(step, loss_sum / n, correct / m if m else None, samples_done / (time.perf_counter() - began))


def _end_epoch(run: _Run, epoch: int, totals: _EpochTotals, began: float, samples_before: int) -> None:
    """Epoch-end callbacks, buffers in step across ranks, evaluation, the history row, the checkpoint."""
    for callback in run.callbacks:
        callback.on_epoch_end(run.model, StepInfo(epoch, epoch * run.steps, run.steps, run.config.epochs * run.steps))
    distributed.broadcast_buffers(run.model, run.info)
    train_seconds = time.perf_counter() - began
    loss_sum, samples, correct, targets = totals.summed(run.info)
    val_acc = _validate(run, epoch)
    run.history.append({"epoch": epoch, "train_loss": loss_sum / samples,
                        "train_acc": correct / targets if targets else None, "val_acc": val_acc,
                        "lr": run.scheduler.get_last_lr()[0],
                        "seconds": time.perf_counter() - began,
                        "samples_per_s": (run.batches[-1][1] - samples_before) / train_seconds})
    run.shown.end_epoch(run.history[-1])
    if run.checkpointer is not None:
        run.checkpointer.save(epoch, 0, run.history, None)


def _validate(run: _Run, epoch: int) -> float | None:
    """Validation accuracy every ``eval_every`` epochs and after the last (None when not evaluated)."""
    config, val = run.config, run.val
    if val is None or len(val) == 0 or not (epoch % config.eval_every == 0 or epoch == config.epochs):
        return None
    if isinstance(val, Split):
        return evaluate(run.model, val, device=run.dev)
    return evaluate_pairs(run.model, val, run.val_options, config.batch_size, run.info, run.dev)
