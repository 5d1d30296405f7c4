"""Teacher logits computed once over the training split, stored as safetensors and reused.

``fit`` hands the loss a batch of inputs, not their indices, so the cache finds each sample by a
key computed from its exact bytes: ``sum_i bits(x_i) * c_i`` over the float32 bit patterns of its
values with fixed random integer coefficients ``c_i < 2^20``, reduced modulo the prime 2^61 - 1
block by block so int64 never overflows. Integer arithmetic is exact and associative, so the key
does not depend on the batch, the order of summation or the device. Distinct inputs share a key
with negligible probability, and equal inputs have equal teacher outputs, so duplicates in the
data are harmless. A batch whose samples are not in the cache (augmented, or other data) is
refused, never silently mismatched.

File (``teacher_logits.safetensors``): ``logits`` (K, N, C) float32 for K teachers, ``keys`` (N,)
int64, and metadata ``{"format": "netshrink-teacher-logits", "version", "teachers": [SHA-256 of
each teacher's state dict]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from netshrink.core.errors import ConfigError, DataError, NetshrinkFormatError, one_line
from netshrink.core.files import write_atomically
from netshrink.distillation.teacher import Teachers

CACHE_NAME = "teacher_logits.safetensors"
CACHE_FORMAT = "netshrink-teacher-logits"
CACHE_VERSION = 1
_META_KEY = "netshrink"
_COEFFICIENT_BITS = 20  # |bits| < 2^31, so each product < 2^51 and a sum of 2^11 of them < 2^62
_MAX_FEATURES = 2 ** 11
_PRIME = 2 ** 61 - 1
_KEY_SEED = 20150309  # fixed: keys must be the same in every process and every run
_CHUNK = 4096


def sample_keys(x: torch.Tensor) -> torch.Tensor:
    """(B,) int64 content keys of the samples of ``x`` (B, ...) float32, on ``x``'s device."""
    flat = x.detach().reshape(len(x), -1)
    if flat.dtype != torch.float32:
        raise DataError(f"the teacher-logit cache keys float32 inputs, got {flat.dtype}")
    coefficients = _coefficients(flat.shape[1], flat.device)
    keys = torch.zeros(len(flat), dtype=torch.int64, device=flat.device)
    for start in range(0, flat.shape[1], _MAX_FEATURES):  # blocks of at most 2^11 features
        block = flat[:, start:start + _MAX_FEATURES].contiguous().view(torch.int32).to(torch.int64)
        # |block sum| < 2^11 * 2^51 = 2^62 and 0 <= keys < 2^61, so the sum stays inside int64
        keys = (keys + (block * coefficients[start:start + _MAX_FEATURES]).sum(1)) % _PRIME
    return keys


def _coefficients(features: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_KEY_SEED)
    return torch.randint(1, 2 ** _COEFFICIENT_BITS, (features,), generator=generator).to(device)


class TeacherLogitCache:
    """The teachers' logits for every training sample, looked up by content (``lookup(x)``)."""

    def __init__(self, logits: torch.Tensor, keys: torch.Tensor) -> None:
        order = torch.argsort(keys)
        self.keys, self.logits = keys[order], logits[:, order]  # sorted for searchsorted
        self._on: torch.device | None = None

    @classmethod
    def compute(cls, teachers: Teachers, x: torch.Tensor, device: torch.device | str = "cpu") -> TeacherLogitCache:
        """Run the teachers once over ``x`` (the training split), in chunks, on ``device``."""
        device = torch.device(device)
        logits = torch.cat([teachers.logits(x[i:i + _CHUNK].to(device)).cpu() for i in range(0, len(x), _CHUNK)],
                           dim=1)
        return cls(logits, sample_keys(x))

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C) cached teacher logits of the batch ``x``; refuses samples not in the cache."""
        if self._on != x.device:
            self.keys, self.logits, self._on = self.keys.to(x.device), self.logits.to(x.device), x.device
        keys = sample_keys(x)
        where = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)
        if not torch.equal(self.keys[where], keys):
            raise DataError("a training batch holds samples the teacher-logit cache lacks (augmented or "
                            "other data); train without augmentation or without the cache")
        return self.logits[:, where]

    def save(self, path: Path, fingerprints: list[str]) -> None:
        """Write the cache atomically."""
        doc = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "teachers": fingerprints}
        tensors = {"logits": self.logits.cpu().contiguous(), "keys": self.keys.cpu().contiguous()}
        write_atomically(path, safetensors_bytes(tensors, metadata={_META_KEY: json.dumps(doc)}))

    @classmethod
    def load(cls, path: Path, fingerprints: list[str], x: torch.Tensor, num_outputs: int) -> TeacherLogitCache:
        """Read a cache and check it was made by these teachers for exactly the samples ``x``."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                doc = json.loads((handle.metadata() or {}).get(_META_KEY, "null"))
                logits, keys = handle.get_tensor("logits"), handle.get_tensor("keys")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise NetshrinkFormatError(f"{path} is not a readable teacher-logit cache ({one_line(exc, 120)}); "
                                       "delete it to recompute") from None
        if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("version") != CACHE_VERSION:
            raise NetshrinkFormatError(f"{path} is not a netshrink teacher-logit cache (version {CACHE_VERSION}); "
                                       "delete it to recompute")
        if doc.get("teachers") != fingerprints:
            raise ConfigError(f"{path} holds the logits of other teachers; delete it or use a new output folder")
        if (logits.ndim != 3 or logits.dtype != torch.float32 or keys.dtype != torch.int64
                or logits.shape != (len(fingerprints), len(keys), num_outputs)):
            raise NetshrinkFormatError(f"{path} holds logits of shape {tuple(logits.shape)}, not "
                                       f"({len(fingerprints)}, {len(keys)}, {num_outputs}); delete it to recompute")
        if len(keys) != len(x) or not torch.equal(torch.sort(keys).values, torch.sort(sample_keys(x)).values):
            raise DataError(f"{path} was computed on other training data ({len(keys)} samples, this split has "
                            f"{len(x)} or differs); delete it or use a new output folder")
        return cls(logits, keys)
