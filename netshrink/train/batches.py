"""Where ``fit``'s batches come from: in-memory tensors, or a map-style ``torch.utils.data.Dataset``
of ``(x, y)`` pairs read through a ``DataLoader`` (image folders too large for memory, token ids,
a user's own pipeline).

Both sources follow one order, so training on a Dataset gives the weights of the same run on
tensors holding the same samples. Every epoch draws a seeded permutation of the training samples
(the same on every rank) and cuts it into global batches of ``batch_size``; rank ``r`` of ``W``
reads only its strided share ``batch[r::W]`` of each. That is ``DistributedSampler``'s split
(``indices[rank::num_replicas]``) applied per batch, written here rather than taken from torch
because ``DistributedSampler`` pads every epoch with repeated samples to a multiple of ``W`` (so a
sharded run would differ from a one-process run), draws its order from ``seed + epoch`` instead of
the run's saved generator, and cannot start in the middle of an epoch, which step-level resume
needs.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data import Dataset as TorchDataset

from netshrink.core.errors import ConfigError
from netshrink.data.dataset import Dataset, Split
from netshrink.train.distributed import DistInfo, all_reduce_sum

#: how a DataLoader loads (kept from a user's loader); which samples and in which order is fit's
_LOADING_OPTIONS = ("num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn",
                    "multiprocessing_context", "prefetch_factor", "persistent_workers", "pin_memory_device",
                    "in_order")
#: samples read (with every RNG seeded) to fingerprint a Dataset without reading all of it
FINGERPRINT_SAMPLES = 16


def global_batches(n: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each global batch of an epoch of ``n`` samples."""
    # a trailing batch too small to give every rank a sample is skipped (only possible under DDP)
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)
            if min(s + batch_size, n) - s >= world_size]


class ShardedBatches(Sampler[list[int]]):
    """This rank's sample indices of each global batch of an epoch, from step ``start`` on.

    ``set_epoch`` gives the epoch's number and order before each pass; one sampler serves a whole
    run, so a DataLoader with ``persistent_workers`` keeps its workers.
    """

    def __init__(self, spans: Sequence[tuple[int, int]], info: DistInfo) -> None:
        self.spans, self.info = list(spans), info
        self.epoch, self.order, self.start = 0, torch.arange(0), 0

    def set_epoch(self, epoch: int, order: torch.Tensor, start: int) -> None:
        self.epoch, self.order, self.start = epoch, order, start

    def shares(self, device: torch.device | None = None) -> Iterator[torch.Tensor]:
        """This rank's indices of each remaining global batch, as tensors on ``device`` (the order
        is moved there once per epoch: a copy per step would wait for the device every step)."""
        order = self.order.to(device) if device is not None else self.order
        for lo, hi in self.spans[self.start:]:
            yield order[lo:hi][self.info.rank::self.info.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        for share in self.shares():
            yield share.tolist()

    def __len__(self) -> int:
        return len(self.spans) - self.start


class TensorBatches:
    """The fast path: batches cut by indexing tensors that are already in memory (no DataLoader).

    Without augmentation the split is moved to the training device once; augmentation draws its
    randomness on the CPU, so then batches are cut there and moved afterwards.
    """

    def __init__(self, split: Split, sampler: ShardedBatches, device: torch.device) -> None:
        self.x, self.y = split.x.to(device), split.y.to(device)
        self.split, self.sampler = split, sampler

    def __len__(self) -> int:
        return len(self.y)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's ``(x, y)`` batches of the sampler's epoch."""
        for index in self.sampler.shares(self.y.device):
            yield self.x[index], self.y[index]

    def fingerprint(self) -> str:
        """A hash of every byte of the split."""
        return _hash([self.split.x, self.split.y])


class LoaderBatches:
    """Batches of a map-style Dataset of ``(x, y)`` pairs (or of unlabeled inputs), read by a DataLoader with the user's
    loading options (workers, collate_fn, pinning) and fit's order (``ShardedBatches``)."""

    def __init__(self, dataset: TorchDataset, options: dict[str, Any], sampler: ShardedBatches,
                 seed: int) -> None:
        self.dataset, self.options, self.sampler, self.seed = dataset, options, sampler, seed
        # a private generator seeds the loader's workers, so loading never draws from the global RNG
        self.loader = DataLoader(dataset, batch_sampler=sampler, generator=torch.Generator(), **options)

    def __len__(self) -> int:
        return len(self.dataset)

    def epoch(self) -> Iterator[tuple[Any, torch.Tensor | None]]:
        """This rank's ``(x, y)`` batches of the sampler's epoch (``y`` None for unlabeled data).

        Workers are seeded from (seed, epoch, rank) alone, so random transforms they apply repeat
        in a run resumed at an epoch end (not mid-epoch, and not with ``persistent_workers``, whose
        RNG runs on from the first epoch they served).
        """
        entropy = [self.seed, self.sampler.epoch, self.sampler.info.rank]
        self.loader.generator.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        for batch in self.loader:
            yield check_pair(batch)

    def fingerprint(self) -> str:
        """A hash of the Dataset's type, length and ``FINGERPRINT_SAMPLES`` evenly spaced samples,
        read with every RNG seeded (so random transforms repeat) and restored afterwards. Cheap,
        and it catches another data set, not one changed sample in the middle."""
        n = len(self.dataset)
        picks = sorted({round(i * (n - 1) / max(1, FINGERPRINT_SAMPLES - 1)) for i in range(FINGERPRINT_SAMPLES)})
        collate = self.options.get("collate_fn") or torch.utils.data.default_collate
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                random.seed(0)
                np.random.seed(0)
                samples = [collate([self.dataset[i]]) for i in picks] if n else []
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return _hash([f"{type(self.dataset).__module__}.{type(self.dataset).__qualname__}", n, samples])


def _hash(items: Any) -> str:
    digest = hashlib.blake2b(digest_size=16)

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().contiguous()
            digest.update(f"tensor{item.dtype}{tuple(item.shape)}".encode())
            digest.update(item.reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(item, (list, tuple)):
            digest.update(f"seq{len(item)}".encode())
            for part in item:
                feed(part)
        elif isinstance(item, dict):
            digest.update(f"map{len(item)}".encode())
            for key in sorted(item, key=repr):
                feed(repr(key))
                feed(item[key])
        else:
            digest.update(repr(item).encode())

    feed(items)
    return digest.hexdigest()


def check_pair(batch: Any) -> tuple[Any, torch.Tensor | None]:
    """A collated batch as ``(inputs, labels)``; ``labels`` is None for unlabeled data.

    An ``(x, y)`` pair of tensors is labelled; a tensor, a mapping of keyword inputs
    (``{"input_ids": ..., "attention_mask": ...}``) or a one-item tuple of either holds inputs
    alone (recovery trains on such data with a loss that needs no labels). Anything else is a
    one-line ``ConfigError``.
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch):
        return batch[0], batch[1]
    if isinstance(batch, (tuple, list)) and len(batch) == 1:
        batch = batch[0]
    if isinstance(batch, torch.Tensor) or (isinstance(batch, Mapping) and batch
                                           and all(isinstance(t, torch.Tensor) for t in batch.values())):
        return batch, None
    kind = type(batch).__name__ + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    raise ConfigError(f"a training batch is a {kind}, not an (x, y) pair of tensors nor unlabeled inputs (a "
                      "tensor or a dict of tensors); make the Dataset return one of those or give a collate_fn "
                      "that builds them")


def loading_options(loader: DataLoader, config_batch_size: int | None) -> dict[str, Any]:
    """The DataLoader's loading options, after checking that fit can choose the samples itself.

    fit draws the order (seeded, resumable, sharded under DDP), so a loader with its own sampler,
    batch sampler or ``drop_last`` is refused; ``shuffle`` is fit's. ``config_batch_size`` (the
    global ``FitConfig.batch_size``) must equal the loader's, if given.
    """
    if not isinstance(loader.batch_sampler, BatchSampler) or loader.batch_size is None:
        raise ConfigError("fit draws the batches itself (seeded, resumable, split across processes); give "
                          "a DataLoader without batch_sampler, or the Dataset")
    if type(loader.sampler) not in (SequentialSampler, RandomSampler):
        raise ConfigError(f"fit draws the order itself (seeded, resumable, split across processes); give "
                          f"a DataLoader without sampler= (it has a {type(loader.sampler).__name__}), or the Dataset")
    if loader.drop_last:
        raise ConfigError("fit keeps every sample (the last batch may be smaller); build the DataLoader "
                          "with drop_last=False")
    if config_batch_size is not None and loader.batch_size != config_batch_size:
        raise ConfigError(f"the DataLoader's batch_size {loader.batch_size} differs from FitConfig.batch_size "
                          f"{config_batch_size} (the global batch, which fit splits across processes); "
                          "make them equal")
    return {name: getattr(loader, name) for name in _LOADING_OPTIONS if hasattr(loader, name)}


def as_source(data: Any, what: str, config_batch_size: int | None) -> tuple[Split | TorchDataset,
                                                                              dict[str, Any]]:
    """``data`` (a Split, a map-style Dataset of pairs or a DataLoader over one) as a Split or
    a Dataset plus loading options; ``what`` names the argument in errors."""
    if isinstance(data, Split):
        return data, {}
    if isinstance(data, DataLoader):
        options = loading_options(data, config_batch_size)
        data = data.dataset
    else:
        options = {}
    if isinstance(data, IterableDataset):
        raise ConfigError(f"{what} is an IterableDataset, which cannot be split across processes or resumed "
                          "at a known sample; give a map-style Dataset (with __len__ and __getitem__)")
    if isinstance(data, Dataset):
        raise ConfigError(f"{what} is a whole netshrink Dataset; give one split of it (e.g. data.val)")
    if not isinstance(data, TorchDataset) or not hasattr(data, "__len__"):
        raise ConfigError(f"{what} must be a netshrink Dataset or Split, a map-style torch Dataset of "
                          f"(x, y) pairs or a DataLoader over one; got {type(data).__name__}")
    return data, options


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, dataset: TorchDataset, options: dict[str, Any], batch_size: int,
                   info: DistInfo, device: torch.device) -> float | None:
    """Top-1 accuracy (over every target, so token-level for sequence labels) on a Dataset of pairs.

    Under DDP each rank reads the samples ``rank::W`` and the counts are summed, so every rank
    gets the accuracy over the whole set; None when it is empty. Evaluation draws from no RNG the
    training uses.
    """
    loader = DataLoader(dataset, batch_size=batch_size, sampler=range(info.rank, len(dataset), info.world_size),
                        generator=torch.Generator().manual_seed(0), **options)
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for batch in loader:
                x, y = check_pair(batch)
                if y is None:
                    raise ConfigError("the validation data has no labels; give (x, y) pairs as val, or no val")
                x, y = x.to(device), y.to(device)
                counts[0] += (model(x).argmax(-1) == y).sum()
                counts[1] += y.numel()
    finally:
        model.train(was_training)
    correct, total = all_reduce_sum(counts, info).tolist()
    return correct / total if total else None
