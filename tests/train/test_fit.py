import dataclasses
import io
import itertools
import math
import sys

import pytest
import torch

from netshrink.core.errors import ConfigError, NetshrinkError
from netshrink.train import Callback, FitConfig, fit, load_checkpoint, load_model
from netshrink.train.fit import CHECKPOINT_NAME, MODEL_NAME, lr_factor
from tests.models import TINY_MODELS

QUICK = FitConfig(epochs=3, batch_size=16, lr=0.05)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fit_learns_digits_for_every_model(tiny_model, digits):
    result = fit(tiny_model, digits, QUICK, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.val_acc == result.history[-1]["val_acc"]
    assert result.val_acc > 0.6  # chance is 0.1; measured 0.78 (user_resnet) to 0.99
    assert result.model is tiny_model


def test_history_fields(digits):
    torch.manual_seed(0)
    result = fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=3, eval_every=2),
                 progress=False)
    first = result.history[0]
    assert set(first) >= {"epoch", "train_loss", "train_acc", "val_acc", "seconds", "samples_per_s"}
    assert first["val_acc"] is None  # not an evaluation epoch
    assert [h["val_acc"] is None for h in result.history] == [True, False, False]  # 2 and last
    assert first["samples_per_s"] > 0 and 0 <= first["train_acc"] <= 1
    assert result.history[-1]["train_loss"] < first["train_loss"]


def test_progress_in_a_log_is_one_line_per_epoch(digits, capsys):
    """stderr captured (not a terminal): no bar and no carriage returns, one line per epoch."""
    torch.manual_seed(0)
    fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=2, eval_every=2), progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert [line.split()[:2] for line in lines] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert "val_acc -" in lines[0] and "val_acc 0." in lines[1] and "samples_s" in lines[1]


def test_progress_on_a_terminal_is_a_bar(digits, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    torch.manual_seed(0)
    fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1), progress=True)
    assert "\r" in terminal.getvalue() and "epoch 1/1" in terminal.getvalue()


def test_no_progress_prints_nothing(digits, capsys):
    fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1), progress=False)
    assert capsys.readouterr() == ("", "")


def test_custom_loss_is_used(digits):
    def favour_class_zero(logits, x, y):
        return -logits[:, 0].mean() + logits[:, 1:].mean()

    torch.manual_seed(0)
    result = fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1, lr=0.01), loss_fn=favour_class_zero,
                 progress=False)
    predictions = result.model(digits.val.x).argmax(1)
    assert (predictions == 0).all()
    assert result.val_acc < 0.2


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_same_seed_same_weights(digits, optimizer):
    config = FitConfig(epochs=2, batch_size=32, lr=0.01, optimizer=optimizer, augment=True, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(_state(fit(TINY_MODELS["convnet"](), digits, config, progress=False).model))
    _assert_same_weights(*runs)


def test_writes_checkpoint_and_model(tmp_path, digits):
    torch.manual_seed(0)
    result = fit(TINY_MODELS["lenet5"](), digits, FitConfig(epochs=2), out_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, MODEL_NAME]
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert meta["epoch"] == 2 and meta["fit_config"] == FitConfig(epochs=2).to_dict()
    assert meta["history"] == result.history
    loaded = load_model(tmp_path / MODEL_NAME)
    _assert_same_weights(_state(loaded), _state(result.model))


class _Crash(Exception):
    pass


def test_resume_after_crash_matches_uninterrupted_run(tmp_path, digits):
    config = FitConfig(epochs=3, batch_size=32, augment=True, warmup_epochs=1)
    torch.manual_seed(0)
    reference = fit(TINY_MODELS["convnet"](), digits, config, progress=False)

    calls = 0

    def crash_in_epoch_two(logits, x, y):
        nonlocal calls
        calls += 1
        if calls == 50:  # 38 steps per epoch: dies mid-way through epoch 2
            raise _Crash
        return torch.nn.functional.cross_entropy(logits, y)

    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(TINY_MODELS["convnet"](), digits, config, loss_fn=crash_in_epoch_two, out_dir=tmp_path,
            progress=False)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)[1]["epoch"] == 1
    torch.manual_seed(123)  # resuming depends on neither the caller's RNG nor the initial weights
    resumed = fit(TINY_MODELS["convnet"](), digits, config, out_dir=tmp_path, resume=True,
                  progress=False)
    _assert_same_weights(_state(resumed.model), _state(reference.model))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.val_acc == reference.val_acc


def test_resume_refuses_another_config(tmp_path, digits):
    fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different FitConfig"):
        fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=2), out_dir=tmp_path, resume=True,
            progress=False)


def test_resume_without_out_dir_is_an_error(digits):
    with pytest.raises(ConfigError, match="out_dir"):
        fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1), resume=True, progress=False)


def test_resume_without_checkpoint_starts_fresh(tmp_path, digits):
    runs = []
    for resume in (False, True):
        torch.manual_seed(0)
        runs.append(_state(fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1),
                               out_dir=tmp_path / str(resume), resume=resume, progress=False).model))
    _assert_same_weights(*runs)


def test_lr_schedules():
    steps = 10
    cosine = FitConfig(epochs=4, warmup_epochs=1)
    factors = [lr_factor(s, cosine, steps) for s in range(40)]
    assert factors[:10] == [pytest.approx((s + 1) / 10) for s in range(10)]
    assert factors[10] == 1.0 and factors[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    step = FitConfig(epochs=4, schedule="step")
    assert [lr_factor(e * steps, step, steps) for e in range(4)] == [1.0, 1.0, pytest.approx(0.1),
                                                                      pytest.approx(0.01)]
    one_epoch = FitConfig(epochs=1, schedule="step")  # short runs still start at the full rate
    assert [lr_factor(s, one_epoch, steps) for s in (0, 4, 5, 7, 8, 9)] == [
        1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.01), pytest.approx(0.01)]
    assert lr_factor(35, FitConfig(epochs=4, schedule="constant"), steps) == 1.0
    assert math.isclose(lr_factor(0, FitConfig(epochs=1), steps), 1.0)


def test_empty_validation_split_gives_no_val_acc(digits):
    empty = digits.val.__class__(digits.val.x[:0], digits.val.y[:0])
    result = fit(TINY_MODELS["user_mlp"](), dataclasses.replace(digits, val=empty),
                 FitConfig(epochs=1), progress=False)
    assert result.val_acc is None and result.history[0]["val_acc"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_learns_and_resumes_exactly(tmp_path, digits):
    """Learning is claimed for a budget that learns with margin (no augmentation: a 2-pixel crop and
    a flip of 8x8 digits left the tiny convnet at val_acc 0.24-0.41 after 2 epochs on the CPU too,
    seeds 0-7, which is what the H200 run saw); exact resume is checked with augmentation and
    step-level checkpoints, under deterministic kernels (cuBLAS and cuDNN are not by default)."""
    # deterministic: the autouse fixture switches deterministic kernels on, and cuBLAS then needs
    # the fixed workspace that fit sets up only when asked; CPU, seeds 0-7: val_acc 0.941-0.985
    learn = FitConfig(epochs=3, batch_size=32, deterministic=True)
    torch.manual_seed(0)
    learned = fit(TINY_MODELS["convnet"](), digits, learn, device="cuda", progress=False)
    assert learned.val_acc > 0.8
    assert next(learned.model.parameters()).is_cuda

    config = FitConfig(epochs=2, batch_size=32, augment=True, deterministic=True, checkpoint_every_steps=10)
    torch.manual_seed(0)
    reference = fit(TINY_MODELS["convnet"](), digits, config, device="cuda", progress=False)
    calls = 0

    def crash_in_epoch_two(logits, x, y):
        nonlocal calls
        calls += 1
        if calls == 50:
            raise _Crash
        return torch.nn.functional.cross_entropy(logits, y)

    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(TINY_MODELS["convnet"](), digits, config, loss_fn=crash_in_epoch_two, out_dir=tmp_path,
            device="cuda", progress=False)
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)[1]["step_in_epoch"] == 2  # after step 40
    resumed = fit(TINY_MODELS["convnet"](), digits, config, out_dir=tmp_path, resume=True,
                  device="cuda", progress=False)
    _assert_same_weights(_state(resumed.model), _state(reference.model))


def test_deterministic_switches_deterministic_kernels_on_for_the_run_only(digits):
    seen = []

    class Look(Callback):
        def on_step_begin(self, model, info):
            seen.append(torch.are_deterministic_algorithms_enabled())

    torch.use_deterministic_algorithms(False)  # the autouse fixture restores its own setting
    fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1, batch_size=512, deterministic=True),
        progress=False, callbacks=[Look()])
    assert seen == [True] * 3 and not torch.are_deterministic_algorithms_enabled()
    fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1, batch_size=512), progress=False,
        callbacks=[Look()])
    assert seen[3:] == [False] * 3


def test_divergence_is_an_error(digits):
    def nan_loss(logits, x, y):
        return torch.nn.functional.cross_entropy(logits, y) + float("nan")

    with pytest.raises(NetshrinkError, match="diverged") as info:
        fit(TINY_MODELS["user_mlp"](), digits, FitConfig(epochs=1), loss_fn=nan_loss, progress=False)
    assert "\n" not in str(info.value)


def test_callbacks_see_every_step_in_order_and_act_on_the_model(digits):
    """A callback is called before and after each optimizer step and after each epoch, with the
    global step index; zeroing a weight in ``on_step_end`` keeps it zero through training."""

    class Recorder(Callback):
        def __init__(self):
            self.calls = []

        def on_step_begin(self, model, info):
            self.calls.append(("begin", info.epoch, info.step))

        def on_step_end(self, model, info):
            self.calls.append(("end", info.epoch, info.step))
            with torch.no_grad():
                model.head.weight[0].zero_()

        def on_epoch_end(self, model, info):
            self.calls.append(("epoch", info.epoch, info.step))

    model = TINY_MODELS["user_mlp"]()
    recorder = Recorder()
    config = FitConfig(epochs=2, batch_size=64, lr=0.05)
    fit(model, digits, config, progress=False, callbacks=[recorder])
    steps = -(-len(digits.train) // 64)
    expected = []
    for epoch in (1, 2):
        for step in range((epoch - 1) * steps, epoch * steps):
            expected += [("begin", epoch, step), ("end", epoch, step)]
        expected.append(("epoch", epoch, epoch * steps))
    assert recorder.calls == expected
    assert torch.count_nonzero(model.head.weight[0]) == 0
