"""Step-level checkpoints: a run stopped mid-epoch resumes to exactly the uninterrupted run, with
callbacks called as in it; a checkpoint is refused on other training data; old checkpoints resume."""

import dataclasses
import json

import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, TensorDataset

from netshrink.core.errors import ConfigError, NetshrinkFormatError
from netshrink.train import Callback, FitConfig, fit, load_checkpoint
from netshrink.train.fit import CHECKPOINT_NAME
from tests.models import TINY_MODELS
from tests.train.test_checkpoint import _rewrite

CONFIG = FitConfig(epochs=3, batch_size=32, augment=True, warmup_epochs=1, checkpoint_every_steps=7)
STEPS = 38  # per epoch: 1213 digits training samples in batches of 32
CRASH_AT = STEPS + 12  # step 12 of epoch 2; the last checkpoint is after global step 49 = step 11


class _Crash(Exception):
    pass


class Recorder(Callback):
    """Records every call; crashes in ``on_step_end`` of global step ``crash_at`` (if given)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.calls, self.crash_at = [], crash_at

    def on_step_begin(self, model, info):
        self.calls.append(("begin", info))

    def on_step_end(self, model, info):
        if info.step + 1 == self.crash_at:
            raise _Crash
        self.calls.append(("end", info))

    def on_epoch_end(self, model, info):
        self.calls.append(("epoch", info))


class Noisy(torch.utils.data.Dataset):
    """Samples with a random transform: noise drawn from the global RNG of whichever process reads them."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index] + 0.01 * torch.randn(self.x[index].shape), self.y[index]


def _data(digits, source):
    if source == "tensors":
        return {"data": digits}
    return {"data": TensorDataset(digits.train.x, digits.train.y), "val": digits.val}


def _run(digits, source, config=CONFIG, callbacks=(), **kwargs):
    torch.manual_seed(0)
    return fit(TINY_MODELS["convnet"](), config=config, progress=False, callbacks=callbacks,
               **_data(digits, source), **kwargs)


@pytest.mark.parametrize("source", ["tensors", "dataset"])
def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path, digits, source):
    everything = Recorder()
    reference = _run(digits, source, callbacks=[everything])
    with pytest.raises(_Crash):
        _run(digits, source, callbacks=[Recorder(crash_at=CRASH_AT)], out_dir=tmp_path)
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 11)

    after = Recorder()
    # checkpointing more or less often does not change training, so it may differ on resume
    resumed = _run(digits, source, config=dataclasses.replace(CONFIG, checkpoint_every_steps=0),
                   callbacks=[after], out_dir=tmp_path, resume=True)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    timing = ("seconds", "samples_per_s")
    assert ([{k: v for k, v in row.items() if k not in timing} for row in resumed.history]
            == [{k: v for k, v in row.items() if k not in timing} for row in reference.history])
    first = everything.calls.index(("begin", after.calls[0][1]))
    assert after.calls[0][1].step == STEPS + 11 and after.calls == everything.calls[first:]


def test_step_checkpoints_are_written_every_n_steps_and_at_epoch_ends(tmp_path, digits):
    seen = []

    class Watch(Callback):
        def on_step_begin(self, model, info):
            path = tmp_path / CHECKPOINT_NAME
            if path.exists():
                meta = load_checkpoint(path)[1]
                seen.append((info.step, meta["epoch"], meta["step_in_epoch"]))

    config = FitConfig(epochs=2, batch_size=128, checkpoint_every_steps=4)  # 10 steps per epoch
    fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, progress=False, callbacks=[Watch()])
    written = sorted({(epoch, step) for _, epoch, step in seen})
    assert written == [(0, 4), (0, 8), (1, 0), (1, 2), (1, 6)]  # global steps 4, 8, epoch 1, 12, 16


@pytest.mark.parametrize("change", ["one pixel", "fewer samples"])
def test_resume_on_other_training_data_is_refused(tmp_path, digits, change):
    config = FitConfig(epochs=2, batch_size=256)
    fit(TINY_MODELS["user_mlp"](), digits, dataclasses.replace(config, epochs=1), out_dir=tmp_path,
        progress=False)
    # the checkpoint was for 1 epoch: rewrite its config so that only the data differs
    tensors, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    _rewrite(tmp_path / CHECKPOINT_NAME, tensors, {**meta, "fit_config": config.to_dict()})
    x, y = digits.train.x.clone(), digits.train.y
    if change == "one pixel":
        x[700, 0, 3, 3] += 0.5
    else:
        x, y = x[:-1], y[:-1]
    other = dataclasses.replace(digits, train=digits.train.__class__(x, y))
    with pytest.raises(ConfigError, match="other training data") as info:
        fit(TINY_MODELS["user_mlp"](), other, config, out_dir=tmp_path, resume=True, progress=False)
    assert "\n" not in str(info.value)
    fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, resume=True, progress=False)


def test_dataset_fingerprint_follows_the_samples_and_not_random_transforms(tmp_path, digits):
    """A Dataset's fingerprint reads a few samples with every RNG seeded: random transforms in
    ``__getitem__`` do not make the same data look different, other samples do."""

    config = FitConfig(epochs=2, batch_size=256)
    pairs = Noisy(digits.train.x, digits.train.y)
    fit(TINY_MODELS["user_mlp"](), pairs, dataclasses.replace(config, epochs=1), out_dir=tmp_path, progress=False)
    tensors, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    _rewrite(tmp_path / CHECKPOINT_NAME, tensors, {**meta, "fit_config": config.to_dict()})
    with pytest.raises(ConfigError, match="other training data"):
        fit(TINY_MODELS["user_mlp"](), Noisy(digits.train.x.flip(0), digits.train.y.flip(0)), config,
            out_dir=tmp_path, resume=True, progress=False)
    result = fit(TINY_MODELS["user_mlp"](), pairs, config, out_dir=tmp_path, resume=True, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2]


def test_checkpoint_from_before_step_checkpoints_still_resumes(tmp_path, digits):
    """A checkpoint written before fingerprints, step counters and the new FitConfig fields
    resumes at its epoch end as before."""
    config = FitConfig(epochs=2, batch_size=128)
    torch.manual_seed(0)
    reference = fit(TINY_MODELS["user_mlp"](), digits, config, progress=False)

    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, progress=False,
            callbacks=[Recorder(crash_at=13)])
    path = tmp_path / CHECKPOINT_NAME
    tensors = dict(load_checkpoint(path)[0])
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["netshrink"])
    old_config = {k: v for k, v in meta["fit_config"].items() if k not in ("checkpoint_every_steps", "deterministic")}
    old_meta = {k: v for k, v in meta.items() if k not in ("data_fingerprint", "step_in_epoch")}
    _rewrite(path, tensors, {**old_meta, "fit_config": old_config})

    resumed = fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, resume=True, progress=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_random_transforms_in_dataloader_workers_repeat_when_resumed_at_an_epoch_end(tmp_path, digits):
    """Workers are seeded from the seed and the epoch, so a resumed run reads the same noise."""
    config = FitConfig(epochs=2, batch_size=128)
    loader = DataLoader(Noisy(digits.train.x, digits.train.y), batch_size=128, num_workers=2)
    torch.manual_seed(0)
    reference = fit(TINY_MODELS["user_mlp"](), loader, config, progress=False)
    torch.manual_seed(0)
    with pytest.raises(_Crash):
        fit(TINY_MODELS["user_mlp"](), loader, config, out_dir=tmp_path, progress=False,
            callbacks=[Recorder(crash_at=13)])
    resumed = fit(TINY_MODELS["user_mlp"](), loader, config, out_dir=tmp_path, resume=True, progress=False)
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


@pytest.mark.parametrize("damage", ["no running totals", "step beyond the epoch", "step not a number"])
def test_malformed_mid_epoch_checkpoint_is_a_format_error(tmp_path, digits, damage):
    config = FitConfig(epochs=2, batch_size=128, checkpoint_every_steps=4)
    with pytest.raises(_Crash):
        fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, progress=False,
            callbacks=[Recorder(crash_at=6)])
    path = tmp_path / CHECKPOINT_NAME
    tensors, meta = load_checkpoint(path)
    assert meta["step_in_epoch"] == 4
    if damage == "no running totals":
        tensors = {k: v for k, v in tensors.items() if not k.startswith("totals.")}
    meta = {**meta, "step_in_epoch": {"step beyond the epoch": 10, "step not a number": "4"}.get(damage, 4)}
    _rewrite(path, tensors, meta)
    with pytest.raises(NetshrinkFormatError) as info:
        fit(TINY_MODELS["user_mlp"](), digits, config, out_dir=tmp_path, resume=True, progress=False)
    assert "\n" not in str(info.value)
