"""The torch.nn.utils.prune peer of benchmarks/pruning.py prunes on our gradual schedule."""

import copy

import torch
from torch import nn

from benchmarks.pruning import SPARSITY, TorchGradualPrune
from netshrink.core.selection import select, weight_name
from netshrink.prune import PRUNABLE_LAYERS, GradualPrune
from netshrink.train.callbacks import StepInfo


def test_the_peer_keeps_the_same_weights_as_ours_at_every_step_of_the_gradual_schedule():
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    peer = copy.deepcopy(ours)
    schedule = {"start": 0.0, "end": 0.5, "every": 3}
    callbacks = (GradualPrune(sparsity=SPARSITY, scope="global", **schedule),
                 TorchGradualPrune([(m, weight_name(m)) for m in select(peer, kinds=PRUNABLE_LAYERS).values()],
                                   **schedule))
    total, seen = 40, set()
    for step in range(total):
        info = StepInfo(epoch=1, step=step, steps_per_epoch=total, total_steps=total)
        for callback, model in zip(callbacks, (ours, peer), strict=True):
            callback.on_step_begin(model, info)
        kept = [[(layer.weight != 0) for layer in (model[0], model[2])] for model in (ours, peer)]
        assert all(torch.equal(a, b) for a, b in zip(*kept, strict=True))
        seen.add(sum(int(k.sum()) for k in kept[0]))
    weights = 20 * 16 + 16 * 4
    assert max(seen) == weights and min(seen) == round((1 - SPARSITY) * weights) and len(seen) > 3
