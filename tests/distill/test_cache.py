"""The teacher-logit cache: content keys, lookups, and files it must refuse."""

import pytest
import torch

from netshrink.core.errors import DataError, NetshrinkFormatError
from netshrink.distillation.cache import TeacherLogitCache, sample_keys
from netshrink.distillation.teacher import Teachers


def test_keys_do_not_depend_on_the_batch(digits):
    x = digits.train.x
    whole = sample_keys(x)
    parts = torch.cat([sample_keys(x[i:i + 7]) for i in range(0, len(x), 7)])
    assert torch.equal(whole, parts)
    assert len(torch.unique(whole)) == len(torch.unique(x.reshape(len(x), -1), dim=0))


def test_keys_change_with_one_value(digits):
    x = digits.train.x[:1].clone()
    y = x.clone()
    y[0, 0, 4, 4] += 1e-6
    assert not torch.equal(sample_keys(x), sample_keys(y))


def test_lookup_returns_each_samples_logits_and_refuses_unknown_ones(teacher, digits):
    teachers = Teachers(teacher)
    cache = TeacherLogitCache.compute(teachers, digits.train.x)
    order = torch.randperm(len(digits.train), generator=torch.Generator().manual_seed(0))[:50]
    torch.testing.assert_close(cache.lookup(digits.train.x[order]), teachers.logits(digits.train.x[order]))
    with pytest.raises(DataError, match="lacks"):
        cache.lookup(digits.val.x[:4])


def test_damaged_file_is_refused(teacher, digits, tmp_path):
    teachers = Teachers(teacher)
    path = tmp_path / "cache.safetensors"
    TeacherLogitCache.compute(teachers, digits.train.x).save(path, teachers.fingerprints())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(NetshrinkFormatError, match="delete it"):
        TeacherLogitCache.load(path, teachers.fingerprints(), digits.train.x, 10)
