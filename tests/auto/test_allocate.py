"""The integer program: one choice per layer, least summed sensitivity within the cost limit."""

import itertools
import random

import pytest

from netshrink.autocompress.allocate import allocate, cheapest, predicted, sensitivity
from netshrink.autocompress.choices import KEEP, Choice

CHOICES = [KEEP] + [Choice(sparsity=s, values="cluster", bits=b) for s in (0.0, 0.5, 0.9) for b in (2, 4, 8)]


def _table(seed: int, layers: int = 3) -> dict:
    rng = random.Random(seed)
    table = {}
    for i in range(layers):
        rows = [{"choice": KEEP.to_dict(), "kl": 0.0, "accuracy": 0.9, "cost": 0.0}]
        for choice in CHOICES[1:]:
            rows.append({"choice": choice.to_dict(), "kl": rng.uniform(0, 2), "accuracy": rng.uniform(0.5, 0.9),
                         "cost": -rng.uniform(100, 1000)})
        table[f"layer{i}"] = rows
    return table


def _brute_force(table, limit, measure):
    best = None
    for combo in itertools.product(*table.values()):
        if sum(r["cost"] for r in combo) <= limit:
            score = sum(sensitivity(r, measure, 0.9) for r in combo)
            if best is None or score < best[0] - 1e-12:
                best = (score, combo)
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("measure", ["kl", "accuracy"])
def test_the_program_finds_the_best_allocation_within_the_limit(seed, measure):
    table = _table(seed)
    limit = -1200.0
    allocation = allocate(table, limit, measure, original_accuracy=0.9)
    score, _ = _brute_force(table, limit, measure)
    rows = [next(r for r in table[layer] if Choice.from_dict(r["choice"]) == c) for layer, c in allocation.items()]
    assert predicted(table, allocation) <= limit
    assert sum(sensitivity(r, measure, 0.9) for r in rows) == pytest.approx(score, abs=1e-4)


def test_a_loose_limit_keeps_every_layer_and_an_impossible_one_gives_none():
    table = _table(0)
    assert set(allocate(table, 0.0).values()) == {KEEP}  # nothing needs to change
    floor = predicted(table, cheapest(table))
    assert allocate(table, floor - 1) is None
    assert allocate(table, floor) == cheapest(table)


def test_ties_go_to_the_cheaper_choice():
    rows = [{"choice": c.to_dict(), "kl": 0.0, "accuracy": 0.9, "cost": -100.0 * i} for i, c in enumerate(CHOICES[:3])]
    assert allocate({"fc": rows}, 0.0) == {"fc": CHOICES[2]}
