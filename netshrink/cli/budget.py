"""``netshrink eval``'s options choosing the operating point of a dynamic model (``netshrink dynamic``).

    netshrink eval FILE --budget-macs X | --budget-ms X | --threshold t
"""

from __future__ import annotations

import argparse
from typing import Any


def budget_args() -> argparse.ArgumentParser:
    """``--budget-macs``, ``--budget-ms`` and ``--threshold``, one at most."""
    parser = argparse.ArgumentParser(add_help=False)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-macs", type=float, default=None,
                        help="run the most accurate profiled point within this many MACs per sample")
    budget.add_argument("--budget-ms", type=float, default=None,
                        help="run the most accurate profiled point within this latency per sample (ms)")
    budget.add_argument("--threshold", type=float, default=None,
                        help="early exits: leave at the first exit whose confidence exceeds t in [0, 1]")
    return parser


def use_budget(model: Any, args: argparse.Namespace, data: Any) -> dict[str, Any] | None:
    """Switch ``model`` to the point the budget options ask for and measure it on the test split
    (accuracy, and latency per sample at batch 1 on real inputs, ``--threads`` threads); None when
    none is asked."""
    from netshrink.dynamic.early_exit import check_threshold, set_thresholds
    from netshrink.dynamic.profile import choose_point, latency_per_sample, use_point
    from netshrink.measure import evaluate

    if args.threshold is not None:
        point = {"kind": "threshold", "value": check_threshold(args.threshold, "--threshold")}
        set_thresholds(model, point["value"])
    elif args.budget_macs is not None or args.budget_ms is not None:
        point = dict(choose_point(model, budget_macs=args.budget_macs, budget_ms=args.budget_ms))
        use_point(model, point)
    else:
        return None
    point["test_accuracy"] = evaluate(model, data.test)
    point["test_latency_ms"] = latency_per_sample(model, data.test.x[:256], threads=args.threads)
    return point


def describe_measured(point: dict[str, Any]) -> str:
    """The chosen point, its profile (if any) and what ``eval`` measured now."""
    profiled = (f" (profiled: val accuracy {point['accuracy']:.4f}, {point['macs']:,.0f} MACs, "
                f"{point['latency_ms']:.3f} ms)") if "accuracy" in point else ""
    return (f"operating point {point['kind']} {point['value']:g}{profiled}: test accuracy "
            f"{point['test_accuracy']:.4f}, {point['test_latency_ms']:.3f} ms per sample (batch 1, test inputs)")
