"""Deep Compression end to end (Han et al. 2016) through the shipped recipes, on Fashion-MNIST.

Runs ``recipes/deep_compression_lenet300_100.toml``, ``recipes/deep_compression_lenet5.toml`` and the
three-family chain ``recipes/distill_prune_cluster_lenet5.toml`` from the kept baselines
(``benchmarks/checkpoints``) with ``netshrink.pipeline.run_recipe`` (resumable in ``--out``), and
reports:

- the compression rate: bytes of the dense fp32 safetensors file of the baseline / bytes of the
  ``.nsk`` file, against the paper's 40x (LeNet-300-100) and 39x (LeNet-5), each at most 0.5 points
  below the baseline's test accuracy;
- per-layer tables in the form of the paper's Tables 2 and 3 (weights, weights kept %, bits per
  kept weight, index bits, rate), from the final file (``netshrink.codec.inspect``);
- the rate after each stage: pruning, clustering (both entropy-coded, as ``save`` always is), and
  the final model stored with entropy coding off, so the share of entropy coding shows;
- the three-family chain beside Deep Compression's on LeNet-5.

The protocol is a :class:`benchmarks.study.Study`: the recipes (settings chosen on the validation
split, their comments list the candidates) are its budget, fixed in ``--out``'s ``protocol.json``
before anything runs; the accuracy targets are judged on seeds 0, 1 and 2 (every training stage's
``FitConfig`` seed), the rates on seed 0. ``--quick`` runs tiny versions on
``digits`` (zoo models trained two epochs first, one epoch per stage) under ``runs/`` to prove the
script works; its figures are not the benchmark's and it writes no results file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import publish, targets_markdown  # noqa: E402
from benchmarks.study import Goal, Study  # noqa: E402
from netshrink.core.files import write_atomically  # noqa: E402

RECIPES = {
    "lenet300_100": "deep_compression_lenet300_100.toml",
    "lenet5": "deep_compression_lenet5.toml",
    "lenet5 distill-prune-cluster": "distill_prune_cluster_lenet5.toml",
}
GOALS = [goal for name, rate in (("lenet300_100", 40.0), ("lenet5", 39.0)) for goal in (
    Goal(f"{name}: compression rate (dense fp32 safetensors / .nsk)", ">=", rate, seeded=False),
    Goal(f"{name}: test accuracy points below the baseline", "<=", 0.5))] + [
    Goal("whole benchmark, recipe stage times summed (min)", "<=", 90.0, seeded=False)]


def with_seed(source: dict, seed: int) -> dict:
    """The recipe with every training stage's ``FitConfig`` seed set to ``seed`` (0: unchanged)."""
    seeded = copy.deepcopy(source)
    for stage in seeded["stages"] if seed else ():
        if "epochs" in stage:
            stage["fit"] = {**stage.get("fit", {}), "seed": seed}
    return seeded


def quick_version(source: dict, zoo: str) -> dict:
    """The recipe on digits: a zoo model trained two epochs first, one epoch per stage."""
    quick = copy.deepcopy(source)
    quick["data"] = {"name": "digits"}
    quick["model"] = {"zoo": zoo}
    quick["stages"] = [{"verb": "train", "epochs": 2, "fit": {"lr": 0.05}}] + [
        {**s, "epochs": 1, **({"teacher": "baseline"} if "teacher" in s else {})} for s in quick["stages"]]
    return quick


def uncoded_rate(out: Path, report: dict) -> float:
    """The final model stored with every integer stream left unentropy-coded."""
    from netshrink.codec.container import load, save

    plain = out / "final-no-entropy.nsk"
    save(load(out / "model.nsk"), plain, entropy="none")
    return report["final"]["baseline_dense_fp32_bytes"] / plain.stat().st_size


def layer_table(rows: list[dict], file_bytes: int) -> str:
    """Deep Compression's Tables 2 and 3 in the paper's definitions (Han et al. 2016, sec. 6):
    weights, weights kept, bits per kept weight (the value stream's bits over the kept weights) and
    index bits per kept weight (the relative-index stream, sec. 3) where the positions are a stream of
    their own; a tensor whose zeros are coded among its values (one stream) has its whole stream as
    bits per kept weight and no index column. The bytes column adds up to the file: the last row is
    the container's header and document."""
    lines = ["| layer | weights | weights kept % | bits / kept weight | index bits | bytes | rate |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        kept = max(1.0, r["weights"] * r["kept_pct"] / 100)
        index_bits = r["bits_per_index"]
        per = r["weights"] if index_bits is None else kept  # inspect's bits are per weight unless sparse
        value_bits = r["bits_per_weight"] * per / kept
        index = "-" if index_bits is None else f"{index_bits:.2f}"
        lines.append(f"| {r['name']} | {r['weights']:,} | {r['kept_pct']:.1f} | {value_bits:.2f} | {index} | "
                     f"{r['bytes']:,} | {r['rate']:.1f}x |")
    overhead = file_bytes - sum(r["bytes"] for r in rows)
    lines.append(f"| header and document | | | | | {overhead:,} | |")
    lines.append(f"| **file** | {sum(r['weights'] for r in rows):,} | | | | **{file_bytes:,}** | |")
    return "\n".join(lines)


def stage_minutes(measurements: dict) -> float:
    """The recipes' stage times (every seed's), summed from their reports: what the benchmark costs
    even when a resumed invocation reuses finished stages."""
    return sum(sum(seconds.values()) for m in measurements.values()
               for seconds in m.get("stage_seconds_per_seed", {"0": m["stage_seconds"]}).values()) / 60


def recipe_section(name: str, m: dict) -> str:
    """One recipe's result: rate, accuracy, the rate after each stage and its per-layer table."""
    return (f"### {name} (`{m['recipe']}`)\n\n{m['rate']:.1f}x ({m['file_bytes']:,} bytes), "
            f"test accuracy {100 * m['test_accuracy']:.2f}% (baseline "
            f"{100 * m['baseline_test_accuracy']:.2f}%, {m['drop_points']:+.2f} points below). Rate after each "
            "stage: " + ", ".join(f"{k} {v:.1f}x" for k, v in m["rate_after_stage"].items()) + ".\n\n"
            + layer_table(m["layers"], m["file_bytes"]))


def markdown(doc: dict) -> str:
    """The deep_compression section of BENCHMARKS.md, from the results file alone."""
    measurements, load = doc["measurements"], doc["load_average_start_end"]
    return (f"## Deep Compression end to end\n\n`python benchmarks/deep_compression.py` on the CPU: the recipes' "
            f"stages took {stage_minutes(measurements):.0f} min in all (this invocation "
            f"{doc['wall_seconds'] / 60:.0f} min, reusing finished stages; load average {load[0]:.1f} at its start "
            f"and {load[1]:.1f} at its end). Each retraining is distilled from the dense original (Deep "
            "Compression's recipes) or from the convnet (the chain); the recipes' settings were chosen on the "
            "validation split (their comments list the candidates)."
            + (f" Accuracy targets: mean ± std over seeds {', '.join(map(str, doc['protocol']['seeds']))} (every "
               "training stage's seed); the rates and tables are seed 0's." if "protocol" in doc else "") + "\n\n"
            + targets_markdown(doc["targets"]) + "\n\n"
            + "\n\n".join(recipe_section(name, m) for name, m in measurements.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny versions on digits under runs/ (no results file)")
    parser.add_argument("--out", default=None, help="run folder (default runs/deep_compression[-quick])")
    args = parser.parse_args()
    from netshrink.pipeline import parse_recipe, run_recipe

    out_root = Path(args.out or ROOT / "runs" / ("deep_compression-quick" if args.quick else "deep_compression"))
    load_start, started = os.getloadavg()[0], time.perf_counter()
    sources = {name: tomllib.loads((ROOT / "recipes" / file).read_text()) for name, file in RECIPES.items()}
    if args.quick:
        sources = {name: quick_version(source, name.split()[0]) for name, source in sources.items()}
    study = Study("deep_compression", out_root, None, grid={}, budget={"recipes": sources, "device": "cpu"},
                  goals=GOALS)
    study.record_choice("recipes", "fixed in the recipe files (chosen on validation, the candidates in their comments)")
    measurements, targets = {}, []
    for name, source in sources.items():
        drop_goal = f"{name}: test accuracy points below the baseline"
        reports = {}
        for seed in study.seeds_for(drop_goal) if drop_goal in study.goals else (0,):
            out = out_root / f"{name.replace(' ', '_')}{f'_s{seed}' if seed else ''}"
            reports[seed] = (out, run_recipe(parse_recipe(with_seed(source, seed), base=ROOT, where=RECIPES[name]),
                                             out, progress=False))
        out, report = reports[0]
        final = report["final"]
        drops = {seed: 100 * (r["final"]["baseline_test_accuracy"] - r["final"]["test_accuracy"])
                 for seed, (_, r) in reports.items()}
        rates = {row["verb"]: row["rate"] for row in report["stages"][1:]}
        rates["without entropy coding"] = uncoded_rate(out, report)
        measurements[name] = {"recipe": f"recipes/{RECIPES[name]}", "rate": final["rate"],
                              "file_bytes": final["file_bytes"], "test_accuracy": final["test_accuracy"],
                              "baseline_test_accuracy": final["baseline_test_accuracy"], "drop_points": drops[0],
                              "drop_points_per_seed": drops, "rate_after_stage": rates,
                              "layers": report["stages"][-1]["layers"],
                              "stage_seconds": {row["verb"]: row["seconds"] for row in report["stages"][1:]},
                              "stage_seconds_per_seed": {seed: {row["verb"]: row["seconds"] for row in r["stages"][1:]}
                                                         for seed, (_, r) in reports.items()}}
        if drop_goal in study.goals:
            targets += [study.target(f"{name}: compression rate (dense fp32 safetensors / .nsk)", final["rate"]),
                        study.target(drop_goal, drops)]
    targets.append(study.target("whole benchmark, recipe stage times summed (min)", stage_minutes(measurements)))
    doc = study.doc(measurements, targets, device="cpu", wall_seconds=time.perf_counter() - started,
                    load_average_start_end=[load_start, os.getloadavg()[0]], quick=args.quick)
    if args.quick:
        write_atomically(out_root / "deep_compression.json", (json.dumps(doc, indent=2) + "\n").encode())
        print(markdown(doc))
        return
    publish("deep_compression", doc, markdown)


if __name__ == "__main__":
    main()
