import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.core.selection import select, weight_name
from netshrink.prune import (
    PRUNABLE_LAYERS,
    MagnitudePrune,
    iterative_prune,
    lottery_ticket,
    plain_state,
    prune_,
    rewind_,
    round_sparsities,
)
from netshrink.train import FitConfig, fit
from tests.prune.helpers import pruned_weights

ONE_EPOCH = FitConfig(epochs=1, batch_size=64, lr=0.02)


def _sparsity(model) -> float:
    weights = pruned_weights(model)
    return sum(int((w == 0).sum()) for w in weights.values()) / sum(w.numel() for w in weights.values())


def test_round_sparsities_remove_the_same_fraction_of_what_is_left():
    values = round_sparsities(0.875, 3)
    assert values == pytest.approx([0.5, 0.75, 0.875])
    with pytest.raises(ConfigError, match="rounds must be a positive integer"):
        round_sparsities(0.5, 0)


def test_iterative_pruning_reaches_each_rounds_sparsity(tiny_model, digits):
    results = iterative_prune(tiny_model, digits, 0.75, 2, ONE_EPOCH, progress=False)
    assert [r.sparsity for r in results] == pytest.approx([0.5, 0.75])
    assert _sparsity(tiny_model) == pytest.approx(0.75, abs=1e-3)
    assert all(r.val_acc is not None and len(r.history) == 1 for r in results)


def test_rewind_restores_surviving_weights_and_keeps_pruned_ones_zero(tiny_model, digits):
    snapshot = plain_state(tiny_model)
    prune_(tiny_model, MagnitudePrune(sparsity=0.6))
    fit(tiny_model, digits, ONE_EPOCH, progress=False)
    parameters = [id(p) for p in tiny_model.parameters()]
    rewind_(tiny_model, snapshot)
    assert [id(p) for p in tiny_model.parameters()] == parameters
    prunable = {name: (m, weight_name(m)) for name, m in select(tiny_model, kinds=PRUNABLE_LAYERS).items()}
    for name, (module, tensor) in prunable.items():
        weight = getattr(module, tensor).detach()
        kept = weight != 0
        assert torch.equal(weight[kept], snapshot[f"{name}.{tensor}"][kept]), name
        assert kept.float().mean() == pytest.approx(0.4, abs=0.01)
    state = plain_state(tiny_model)
    others = [k for k in snapshot if k not in {f"{n}.{t}" for n, (_, t) in prunable.items()}]
    assert others and all(torch.equal(state[k], snapshot[k]) for k in others)  # biases, norms, buffers


def test_lottery_ticket_prunes_rewinds_and_retrains(tiny_model, digits):
    initial = plain_state(tiny_model)
    results = lottery_ticket(tiny_model, digits, 0.75, ONE_EPOCH, rounds=2, progress=False)
    assert [r.sparsity for r in results] == pytest.approx([0.0, 0.5, 0.75])
    assert _sparsity(tiny_model) == pytest.approx(0.75, abs=1e-3)
    # the last round retrained from the rewound initial weights: its weights moved away from them
    trained = pruned_weights(tiny_model)
    assert any(not torch.equal(w, initial[f"{n}.weight"] * (w != 0)) for n, w in trained.items()
               if f"{n}.weight" in initial)


def test_lottery_ticket_rewinds_to_an_early_step(digits):
    from tests.models import TINY_MODELS

    torch.manual_seed(0)
    model = TINY_MODELS["user_mlp"]()
    initial = plain_state(model)
    seen = {}
    original_rewind = rewind_

    def spy(model, snapshot):
        seen["snapshot"] = snapshot
        return original_rewind(model, snapshot)

    import netshrink.prune.iterative as iterative

    iterative.rewind_ = spy
    try:
        lottery_ticket(model, digits, 0.5, ONE_EPOCH, rewind_step=3, progress=False)
    finally:
        iterative.rewind_ = original_rewind
    assert not torch.equal(seen["snapshot"]["head.weight"], initial["head.weight"])  # 3 steps in, not init
    with pytest.raises(ConfigError, match="rewind_step 10000 is beyond"):
        lottery_ticket(TINY_MODELS["user_mlp"](), digits, 0.5, ONE_EPOCH, rewind_step=10_000, progress=False)
