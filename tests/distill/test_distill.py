"""distill(): soft labels, teachers (one, ensemble, cache), every tiny student, frozen teachers, resume."""

import pytest
import torch
from torch import nn

from netshrink.core.errors import ConfigError, DataError
from netshrink.data import load_digits
from netshrink.distillation import Distill, distill
from netshrink.distillation.cache import CACHE_NAME
from netshrink.measure.accuracy import predict_logits
from netshrink.train import Callback, FitConfig, load_checkpoint
from netshrink.train.fit import CHECKPOINT_NAME, MODEL_NAME
from tests.models import TINY_MODELS

FAST = FitConfig(epochs=3, batch_size=32)


def _agreement(student, teacher, x):
    return float((predict_logits(student, x).argmax(1) == predict_logits(teacher, x).argmax(1)).float().mean())


def _student(name="lenet300_100"):
    torch.manual_seed(0)
    return TINY_MODELS[name]()


def test_every_tiny_student_learns_to_agree_with_the_teacher(tiny_model, teacher, digits):
    before = _agreement(tiny_model, teacher, digits.val.x)
    result = distill(tiny_model, teacher, digits, Distill(T=4.0, alpha=0.9), FAST, progress=False)
    assert result.model is tiny_model
    assert _agreement(tiny_model, teacher, digits.val.x) > max(0.5, before + 0.2)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


class _Swapped(nn.Module):
    """The teacher with the outputs of two classes exchanged: wrong on both, confidently."""

    def __init__(self, base: nn.Module, a: int, b: int) -> None:
        super().__init__()
        self.base = base
        self.order = list(range(10))
        self.order[a], self.order[b] = b, a

    def forward(self, x):
        return self.base(x)[:, self.order]


def test_pure_soft_labels_follow_the_teacher_where_it_is_wrong(teacher, digits):
    wrong = _Swapped(teacher, 1, 7)
    ones = digits.val.x[digits.val.y == 1]
    config = FitConfig(epochs=6, batch_size=32)
    soft = distill(_student(), wrong, digits, Distill(T=2.0, alpha=1.0), config, progress=False).model
    hard = distill(_student(), wrong, digits, Distill(T=2.0, alpha=0.0), config, progress=False).model
    # alpha = 1: the student learnt the teacher's mistake and calls the 1s 7s; alpha = 0 it learnt the labels
    assert float((predict_logits(soft, ones).argmax(1) == 7).float().mean()) > 0.7
    assert float((predict_logits(hard, ones).argmax(1) == 1).float().mean()) > 0.7


def test_teacher_is_frozen_and_unchanged(teacher, digits):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    distill(_student(), teacher, digits, Distill(), FAST, progress=False)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_ensemble_of_identical_teachers_equals_one_teacher(teacher, teacher_state, digits):
    twin = TINY_MODELS["convnet"]()
    twin.load_state_dict(teacher_state)
    one = distill(_student(), teacher, digits, Distill(), FAST, progress=False).model
    two = distill(_student(), [teacher, twin], digits, Distill(), FAST, progress=False).model
    for key, value in one.state_dict().items():
        assert torch.equal(two.state_dict()[key], value), key


def test_ensemble_of_different_teachers_differs_from_each(teacher, digits):
    other = _Swapped(teacher, 2, 3)
    both = distill(_student(), [teacher, other], digits, Distill(), FAST, progress=False).model
    alone = distill(_student(), teacher, digits, Distill(), FAST, progress=False).model
    assert not torch.equal(both.fc3.weight, alone.fc3.weight)


class _Counting(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base, self.samples = base, 0

    def forward(self, x):
        self.samples += len(x)
        return self.base(x)


def test_cached_logits_train_like_the_live_teacher_and_are_reused(teacher, digits, tmp_path):
    live = distill(_student(), teacher, digits, Distill(), FAST, progress=False).model
    counting = _Counting(teacher)
    cached = distill(_student(), counting, digits, Distill(cache_teacher=True), FAST, out_dir=tmp_path,
                     progress=False).model
    assert (tmp_path / CACHE_NAME).is_file()
    assert counting.samples < 2 * len(digits.train) + 10  # one pass over the training split, plus probes
    for key, value in live.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[key], value, rtol=0, atol=1e-4)
    counting.samples = 0
    distill(_student(), counting, digits, Distill(cache_teacher=True), FAST, out_dir=tmp_path, progress=False)
    assert counting.samples < 10  # reused: the teacher only saw the probe samples


def test_cache_refuses_augmentation(teacher, digits):
    with pytest.raises(ConfigError, match="augmentation"):
        distill(_student(), teacher, digits, Distill(cache_teacher=True), FitConfig(epochs=1, augment=True))


def test_cache_refuses_other_data_and_other_teachers(teacher, digits, tmp_path):
    distill(_student(), teacher, digits, Distill(cache_teacher=True), FitConfig(epochs=1), out_dir=tmp_path,
            progress=False)
    other_split = load_digits(seed=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataError, match="other training data"):
        distill(_student(), teacher, other_split, Distill(cache_teacher=True), FitConfig(epochs=1), out_dir=tmp_path)
    other_teacher = TINY_MODELS["convnet"]()
    with pytest.raises(ConfigError, match="other teachers"):
        distill(_student(), other_teacher, digits, Distill(cache_teacher=True), FitConfig(epochs=1), out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_different_output_sizes_are_refused(teacher, digits, tmp_path):
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ConfigError, match="same outputs"):
        distill(student, teacher, digits, Distill(), FAST, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kwargs, message", [({"T": 0.0}, "T must be positive"), ({"T": -1.0}, "T must be positive"),
                                             ({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha")])
def test_bad_temperature_or_alpha_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Distill(**kwargs)


def test_config_round_trips():
    config = Distill(T=8.0, alpha=1.0, cache_teacher=True, omit_classes=(3,), hint=("fc2", "classifier.1"))
    assert Distill.from_dict(config.to_dict()) == config


class _StopAfter(Callback):
    """Raises at the end of an epoch, before its checkpoint: as if the process were killed there."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, model, info):
        if info.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("config", [Distill(), Distill(cache_teacher=True), Distill(hint=("conv2", "features.3"))],
                         ids=["live", "cached", "hint"])
def test_interrupted_run_resumes_exactly(config, teacher, digits, tmp_path):
    fit_config = FitConfig(epochs=3, batch_size=32, lr=0.02)
    with pytest.raises(KeyboardInterrupt):
        distill(_student("lenet5"), teacher, digits, config, fit_config, out_dir=tmp_path, progress=False,
                callbacks=[_StopAfter(2)])
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)[1]["epoch"] == 1
    resumed = distill(_student("lenet5"), teacher, digits, config, fit_config, out_dir=tmp_path, resume=True,
                      progress=False)
    reference = distill(_student("lenet5"), teacher, digits, config, fit_config, progress=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.val_acc == reference.val_acc
    saved, meta = load_checkpoint(tmp_path / MODEL_NAME)
    assert set(saved) == set(reference.model.state_dict()) and meta["arch"]["name"] == "lenet5"
