import pytest
import torch

from netshrink.core import get_log
from netshrink.core.errors import ConfigError
from netshrink.prune import GradualPrune, cubic_sparsity, mask_sparsity
from netshrink.train import Callback, FitConfig, fit
from tests.prune.helpers import pruned_weights

QUICK = FitConfig(epochs=2, batch_size=64, lr=0.02)


def test_cubic_schedule_matches_zhu_and_gupta():
    final, initial, start, end, every = 0.9, 0.1, 10, 50, 10
    assert cubic_sparsity(start, final, initial, start, end, every) == pytest.approx(initial)
    assert cubic_sparsity(end, final, initial, start, end, every) == pytest.approx(final)
    assert cubic_sparsity(30, final, initial, start, end, every) == pytest.approx(final + (initial - final) * 0.5 ** 3)
    assert cubic_sparsity(31, final, initial, start, end, every) is None  # not a pruning step
    assert cubic_sparsity(start - 1, final, initial, start, end, every) is None
    assert cubic_sparsity(end + every, final, initial, start, end, every) is None
    values = [cubic_sparsity(t, final, initial, start, end, every) for t in range(start, end + 1, every)]
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert all(s > 0 for s in steps) and steps == sorted(steps, reverse=True)  # fast first, then slower


class _Record(Callback):
    def __init__(self) -> None:
        self.sparsity = []

    def on_step_begin(self, model, info):
        weights = pruned_weights(model)
        zeros = sum(int((w == 0).sum()) for w in weights.values())
        self.sparsity.append(zeros / sum(w.numel() for w in weights.values()))


def test_gradual_pruning_in_fit_reaches_the_exact_final_sparsity(tiny_model, digits):
    record = _Record()
    fit(tiny_model, digits, QUICK, callbacks=[GradualPrune(sparsity=0.8, every=5, end=0.6), record], progress=False)
    weights = pruned_weights(tiny_model)
    total = sum(w.numel() for w in weights.values())
    assert sum(int((w == 0).sum()) for w in weights.values()) == round(0.8 * total)
    assert record.sparsity == sorted(record.sparsity)  # never falls back
    steps = len(record.sparsity)
    assert record.sparsity[round(0.6 * steps)] == pytest.approx(0.8, abs=1e-3)  # final by the end point
    assert 0 < record.sparsity[steps // 5] < 0.8  # in between on the way
    prunes = [r for r in get_log(tiny_model) if r["verb"] == "magnitude_prune"]
    assert len(prunes) > 3
    sparsities = [r["config"]["sparsity"] for r in prunes]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.8)


def test_gradual_pruning_resumes_exactly(tmp_path, digits):
    from tests.models import TINY_MODELS

    steps_per_epoch = -(-len(digits.train) // QUICK.batch_size)
    calls = [0]

    def crash_in_epoch_two(logits, x, y):
        if calls[0] == steps_per_epoch + 3:
            raise KeyboardInterrupt
        calls[0] += 1
        return torch.nn.functional.cross_entropy(logits, y)

    def run(**kwargs):
        torch.manual_seed(0)
        schedule = GradualPrune(sparsity=0.7, every=4, end=0.9)
        model = schedule.prepare(TINY_MODELS["user_mlp"]())
        return fit(model, digits, QUICK, callbacks=[schedule], progress=False, **kwargs)

    reference = run()
    with pytest.raises(KeyboardInterrupt):
        run(loss_fn=crash_in_epoch_two, out_dir=tmp_path)
    resumed = run(out_dir=tmp_path, resume=True)
    expected, found = reference.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == found.keys()
    for key in expected:
        assert torch.equal(expected[key], found[key]), key
    assert max(mask_sparsity(resumed.model).values()) > 0.5


def test_bad_schedules_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"sparsity must be a number in \[0, 1\)"):
        GradualPrune(sparsity=1.2)
    with pytest.raises(ConfigError, match="start <= end"):
        GradualPrune(sparsity=0.5, start=0.8, end=0.2)
    with pytest.raises(ConfigError, match="every must be a positive"):
        GradualPrune(sparsity=0.5, every=0)
    with pytest.raises(ConfigError, match="unknown scope"):
        GradualPrune(sparsity=0.5, scope="net")
