"""Dynamic computation benchmark (issue 11): early exits, slimmable widths, budgets on Fashion-MNIST.

    python benchmarks/dynamic.py                        # every stage (resumable, see below)
    python benchmarks/dynamic.py --stage exits          # one stage
    python benchmarks/dynamic.py --quick --out runs/dynamic-quick   # tiny budgets, proves the script
    python benchmarks/dynamic.py --epochs 4 --out runs/dynamic-e4   # every model 4 epochs (CPU budget)

Stages (each keeps its models and result in ``--out``, so a killed run continues where it stopped):

- ``exits``: the zoo convnet with exits after ``features.0``, ``features.2`` and ``features.5``
  (``EXIT_HEAD`` heads: the features average-pooled to 8x8, then a 3x3 stride-2 conv, BatchNorm,
  ReLU, pool to 4x4, Linear), trained from scratch
  with the convnet's baselines recipe (12 epochs, crop/flip, seed 0) on the joint loss (every exit
  weight 1, each early exit half distilled from the last), against the kept convnet trained alone
  with that recipe (with ``--epochs``, against a convnet trained here with the same shorter
  recipe). Accuracy against average MACs over thresholds (table and PNG, test split), the
  threshold calibrated on validation for at most 0.5 points below the convnet alone (on
  validation), its MACs and the share leaving at each exit.
- ``exit_latency``: latency per sample at batch 1 and 256 of the convnet alone and of the exits
  model at that threshold (real test inputs, one thread; samples that left are dropped from the
  batch), the two timed in turns, fastest of ``LATENCY_ROUNDS`` rounds each.
- ``slimmable``: ``slimmable_convnet`` at widths 1, 0.75, 0.5, 0.25 trained with the sandwich rule
  and in-place distillation (``sandwich_loss``'s default: the narrower widths half on the widest
  one's predictions, half on the labels), against four convnets of those widths trained alone, same recipe and
  epochs (width 1: the kept convnet); accuracy, MACs and latency per width.
- ``budgets``: the slimmable model profiled on validation, saved to .nsk and loaded back; three
  MACs / latency budgets pick a point from the file's profile table; its test accuracy and latency.

The protocol is a :class:`benchmarks.study.Study` (recipe, exits, widths and devices fixed in its
budget; ``--out`` keeps ``protocol.json`` and refuses another): every stage reads the test split only
after its choice on validation (the threshold, the profile's points), and the accuracy targets are
judged on seeds 0, 1 and 2 (``exits`` and ``slimmable`` rerun with seeds 1 and 2: every model
trained with that seed; the kept convnets of seeds 1 and 2 are the distillation benchmark's teachers).

Writes ``benchmarks/results/dynamic.json``, ``benchmarks/results/dynamic_exits.png`` and the dynamic
section of BENCHMARKS.md (``--quick`` writes only into ``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.baselines import RECIPES  # noqa: E402
from benchmarks.common import (  # noqa: E402
    CHECKPOINTS,
    RESULTS,
    machine_info,
    publish,
    quick_subset,
    repo_path,
    targets_markdown,
)
from benchmarks.study import Goal, Study  # noqa: E402
from netshrink.core.files import write_atomically  # noqa: E402

EXITS = ("features.0", "features.2", "features.5")
#: "pooled_conv": an exit after features.0 (28x28) costs 0.15 MMACs, not the 1.8 of a plain
#: "conv" head, which at batch 1 took longer than the block before it (first run, 1.4x latency)
EXIT_HEAD = "pooled_conv"
WIDTHS = (1.0, 0.75, 0.5, 0.25)
CONVNET_WIDTHS = (32, 32, 64, 64, 128)
CONVNET_HIDDEN = 256
MAX_DROP = 0.005
QUICK_SIZES = {"train": 1500, "val": 400, "test": 600}
QUICK_EPOCHS = 1
LATENCY_SAMPLES = 1000
LATENCY_ROUNDS = 5
PLOT_NAME = "dynamic_exits.png"
SANDWICH_ALPHA = 0.5  # the narrower widths' soft-target weight (sandwich_loss)
#: how the models and stages kept in --out were made, beyond the recipe (part of the Study's budget)
METHOD = {"sandwich_alpha": SANDWICH_ALPHA, "exit_threshold": "calibrated against the convnet alone on validation"}
GOALS = [Goal("early exits: average MACs reduction at the calibrated point (x)", ">=", 2.5, seeded=False),
         Goal("early exits: CPU latency speed-up at batch 1 (x)", ">=", 2.0, seeded=False),
         Goal("early exits: test accuracy drop against the convnet alone (points)", "<=", 0.5),
         *(Goal(f"slimmable width {w:g}: points below the same width trained alone", "<=", 1.0) for w in WIDTHS),
         Goal("whole benchmark, stage time summed (min)", "<=", 90.0, seeded=False)]


class Bench:
    """The data, the recipe and where each stage keeps its models and results."""

    def __init__(self, data, out: Path, device: str, quick: bool, epochs: int | None = None) -> None:
        self.data, self.out, self.device, self.quick = data, out, device, quick
        epochs = QUICK_EPOCHS if quick else epochs
        self.recipe = {**RECIPES["convnet"], **({"epochs": epochs} if epochs else {})}
        # the kept convnet is the "trained alone" model only when it had exactly this recipe
        self.kept_plain = not quick and self.recipe == RECIPES["convnet"]
        self.latency_samples = 64 if quick else LATENCY_SAMPLES
        out.mkdir(parents=True, exist_ok=True)
        self.study = Study("dynamic", out, data, grid={}, goals=GOALS, budget={
            "recipe": self.recipe, **METHOD, "exits": EXITS, "exit_head": EXIT_HEAD, "max_drop": MAX_DROP,
            "widths": WIDTHS, "latency_samples": self.latency_samples, "device": device})
        self.stages, self.data = self.study.store, self.study.data  # the test split: study.test after a choice

    def trained(self, name: str, build, loss=None, seed: int = 0):
        """A model trained with the recipe and ``seed``, kept as ``out/<name>[_s<seed>].nsk`` (reused when there)."""
        from netshrink.codec.container import load, save
        from netshrink.train import FitConfig, fit

        path = self.out / f"{name}{f'_s{seed}' if seed else ''}.nsk"
        if path.exists():
            return load(path).to(self.device)
        torch.manual_seed(seed)
        model = build()
        fit(model, self.data, FitConfig(seed=seed, **self.recipe), loss_fn=loss(model) if loss else None,
            device=self.device, progress=False)
        model.cpu().eval()
        save(model, path)
        return model


def _interleaved_latencies(models: dict, x, rounds: int = LATENCY_ROUNDS) -> dict:
    """Milliseconds per sample of each model at batch 1 and 256 on the real inputs ``x``, one
    thread: the models take turns, ``rounds`` times (one warm-up and one timed pass each turn), and
    each keeps its fastest round, so a load change on the shared CPU hits every model alike."""
    from netshrink.dynamic.profile import latency_per_sample

    times: dict = {name: {"batch_1_ms": [], "batch_256_ms": []} for name in models}
    for _ in range(rounds):
        for batch in (1, 256):
            for name, model in models.items():
                times[name][f"batch_{batch}_ms"].append(latency_per_sample(model, x, batch_size=batch, repeats=1))
    return {name: {key: min(values) for key, values in per.items()} for name, per in times.items()}


def _plain_convnet(bench: Bench, seed: int = 0):
    """The kept convnet of ``seed`` (trained alone with the recipe: seed 0 the baseline, 1 and 2 the
    distillation benchmark's teachers) or, when the recipe differs from the kept one's (quick mode,
    ``--epochs``), one trained here with the same recipe and seed as the dynamic models."""
    from netshrink.models import create
    from netshrink.train import load_model

    if bench.kept_plain:
        return load_model(CHECKPOINTS / f"convnet{f'_seed{seed}' if seed else ''}.safetensors").eval()
    return bench.trained("convnet_plain", lambda: create("convnet", input_shape=list(bench.data.input_shape)),
                         seed=seed)


def _exits_model(bench: Bench, seed: int = 0):
    """The convnet with exits, trained with the recipe on the joint loss (kept in ``--out``), in eval mode."""
    from netshrink.dynamic import EarlyExit, early_exit_, exit_loss
    from netshrink.models import create

    def build():
        return early_exit_(create("convnet", input_shape=list(bench.data.input_shape)),
                           EarlyExit(after=EXITS, head=EXIT_HEAD, pool=4))

    return bench.trained(f"convnet_exits_{EXIT_HEAD}", build, lambda m: exit_loss(m, distill=0.5), seed).eval()


def stage_exit_latency(bench: Bench, exits: dict) -> dict:
    """Latency per sample of the convnet alone and of the exits model at the calibrated threshold,
    interleaved (``_interleaved_latencies``) on the first ``latency_samples`` test inputs."""
    from netshrink.dynamic import set_thresholds

    def compute() -> dict:
        model = _exits_model(bench)
        set_thresholds(model, exits["dynamic"]["threshold"])
        models = {"plain": _plain_convnet(bench), "dynamic": model}
        return {"rounds": LATENCY_ROUNDS, "samples": bench.latency_samples,
                **_interleaved_latencies(models, bench.study.test("exits").x[:bench.latency_samples])}

    return bench.stages.stage(f"exit_latency_{EXIT_HEAD}", compute)


def stage_exits(bench: Bench, seed: int = 0) -> dict:
    from netshrink.core.errors import ConfigError
    from netshrink.dynamic import calibrate_thresholds, exit_costs, threshold_curve
    from netshrink.dynamic.early_exit import set_exit
    from netshrink.measure import count_macs, evaluate

    data, shape = bench.data, bench.data.input_shape

    def compute() -> dict:
        plain = _plain_convnet(bench, seed)
        model = _exits_model(bench, seed)
        plain_val = evaluate(plain, data.val)  # the target bounds the drop against the convnet alone
        try:
            chosen = calibrate_thresholds(model, data.val, max_drop=MAX_DROP, reference_accuracy=plain_val)
        except ConfigError:  # no threshold comes that close: the last exit's accuracy, as cheaply as it can
            chosen = calibrate_thresholds(model, data.val, max_drop=0.0)
        bench.study.record_choice(f"exits seed {seed}", chosen["threshold"], chosen)
        test = bench.study.test(f"exits seed {seed}")
        test_curve = threshold_curve(model, test)
        at_chosen = threshold_curve(model, test, thresholds=[chosen["threshold"]])[0]
        per_exit = []
        for k, cost in enumerate(exit_costs(model)):
            set_exit(model, k)
            per_exit.append({"exit": k, "macs": cost, "test_acc": evaluate(model, test)})
        set_exit(model, None)
        return {
            "exits": list(EXITS), "head": EXIT_HEAD,
            "plain": {"test_acc": evaluate(plain, test), "val_acc": plain_val,
                      "macs": count_macs(plain, shape)},
            "dynamic": {"threshold": chosen["threshold"], "val": chosen, "test_acc": at_chosen["accuracy"],
                        "test_acc_measured": evaluate(model, test), "macs": at_chosen["macs"],
                        "exit_shares": at_chosen["exit_shares"]},
            "per_exit": per_exit,
            "curve": [{k: p[k] for k in ("threshold", "accuracy", "macs", "exit_shares")} for p in test_curve[::8]],
        }

    result = bench.stages.stage(f"exits_{EXIT_HEAD}{f'_s{seed}' if seed else ''}", compute)
    bench.study.record_choice("exits", result["dynamic"]["threshold"], result["dynamic"]["val"])
    return result


def _fixed_width(width: float, shape) -> dict:
    """Kwargs of a convnet with every layer ``width`` times as wide (as the slimmable one runs)."""
    from netshrink.dynamic.slimmable import units_at

    return {"input_shape": list(shape), "widths": [units_at(c, width) for c in CONVNET_WIDTHS],
            "hidden": units_at(CONVNET_HIDDEN, width)}


def stage_slimmable(bench: Bench, seed: int = 0) -> dict:
    from netshrink.dynamic import sandwich_loss, set_width
    from netshrink.measure import count_macs, evaluate, measure_latency
    from netshrink.models import create

    shape = bench.data.input_shape
    bench.study.record_choice("slimmable", "none: the widths are fixed")

    def compute() -> dict:
        slim = bench.trained("slimmable_convnet", lambda: create("slimmable_convnet", input_shape=list(shape)),
                             lambda m: sandwich_loss(m, alpha=SANDWICH_ALPHA), seed)
        test = bench.study.test("slimmable")
        rows = []
        for width in WIDTHS:
            alone = _plain_convnet(bench, seed) if width == 1.0 else bench.trained(
                f"convnet_w{width:g}", lambda w=width: create("convnet", **_fixed_width(w, shape)), seed=seed)
            set_width(slim, width)
            rows.append({"width": width,
                         "slimmable": {"test_acc": evaluate(slim, test), "macs": count_macs(slim, shape),
                                       "batch_1_ms": measure_latency(slim, shape)["median_ms"]},
                         "alone": {"test_acc": evaluate(alone, test), "macs": count_macs(alone, shape),
                                   "batch_1_ms": measure_latency(alone, shape)["median_ms"]}})
        set_width(slim, 1.0)
        return {"rows": rows}

    return bench.stages.stage(f"slimmable{f'_s{seed}' if seed else ''}", compute)


def stage_budgets(bench: Bench) -> dict:
    from netshrink.codec.container import load, save
    from netshrink.dynamic import Profile, choose_point, profile_, profile_table, use_point
    from netshrink.dynamic.profile import latency_per_sample
    from netshrink.measure import evaluate

    data = bench.data

    def compute() -> dict:
        path = bench.out / "slimmable_profiled.nsk"
        if not path.exists():
            slim = load(bench.out / "slimmable_convnet.nsk")
            profile_(slim, Profile(val=data.val, latency_samples=bench.latency_samples))
            save(slim, path)
        model = load(path)
        points = profile_table(model)["points"]  # measured on validation
        bench.study.record_choice("budgets", "the point of the profile table within each budget", points)
        test = bench.study.test("budgets")
        macs = sorted(p["macs"] for p in points)
        ms = sorted(p["latency_ms"] for p in points)
        budgets = [("macs", 1.1 * macs[0]), ("macs", 0.5 * (macs[1] + macs[2])), ("ms", ms[-1] * 1.05)]
        rows = []
        for kind, budget in budgets:
            point = choose_point(model, **({"budget_macs": budget} if kind == "macs" else {"budget_ms": budget}))
            use_point(model, point)
            rows.append({"budget": budget, "unit": "MACs" if kind == "macs" else "ms", "chosen": point,
                         "test_acc": evaluate(model, test),
                         "test_latency_ms": latency_per_sample(model, test.x[:bench.latency_samples])})
        return {"profile": points, "rows": rows}

    return bench.stages.stage("budgets", compute)


def build_targets(study: Study, measured: dict) -> list[dict]:
    """The goals: accuracy on every seed (``measured["seeds"]``, seed 0 the main stages), ratios on seed 0."""
    exits, latency = measured["exits"], measured["exit_latency"]
    plain, dyn = exits["plain"], exits["dynamic"]
    per_seed = {0: {"exits": exits, "slimmable": measured["slimmable"]}, **measured["seeds"]}
    targets = [
        study.target("early exits: average MACs reduction at the calibrated point (x)", plain["macs"] / dyn["macs"]),
        study.target("early exits: CPU latency speed-up at batch 1 (x)",
                     latency["plain"]["batch_1_ms"] / latency["dynamic"]["batch_1_ms"]),
        study.target("early exits: test accuracy drop against the convnet alone (points)",
                     {s: 100 * (r["exits"]["plain"]["test_acc"] - r["exits"]["dynamic"]["test_acc_measured"])
                      for s, r in per_seed.items()})]
    for k, width in enumerate(WIDTHS):
        rows = {s: r["slimmable"]["rows"][k] for s, r in per_seed.items()}
        targets.append(study.target(f"slimmable width {width:g}: points below the same width trained alone", {
            s: 100 * (row["alone"]["test_acc"] - row["slimmable"]["test_acc"]) for s, row in rows.items()}))
    targets.append(study.target("whole benchmark, stage time summed (min)", measured["stage_minutes_summed"]))
    return targets


def plot(exits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = exits["curve"]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot([p["macs"] / 1e6 for p in curve], [100 * p["accuracy"] for p in curve], ".-", label="early exits")
    axes.plot([exits["plain"]["macs"] / 1e6], [100 * exits["plain"]["test_acc"]], "s", label="convnet alone")
    axes.plot([exits["dynamic"]["macs"] / 1e6], [100 * exits["dynamic"]["test_acc"]], "*", markersize=12,
              label="calibrated (val)")
    axes.set_xlabel("average MMACs per sample")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("Early-exit convnet, Fashion-MNIST")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown(doc: dict) -> str:
    """The dynamic section of BENCHMARKS.md, from the results file alone."""
    measured, quick = doc["measurements"], doc["quick"]
    exits, slim, budgets = measured["exits"], measured["slimmable"], measured["budgets"]
    plain, dyn, latency = exits["plain"], exits["dynamic"], measured["exit_latency"]
    lines = ["## Dynamic computation (Fashion-MNIST)", "",
             f"`python benchmarks/dynamic.py`{' --quick (tiny budgets, not the real figures)' if quick else ''} on "
             f"{measured['device']}; convnet recipe {json.dumps(measured['recipe'])}; latencies per sample on "
             f"real test inputs, one thread; the two early-exit rows timed in turns, fastest of "
             f"{latency['rounds']} rounds each.", "",
             f"Early exits ({exits.get('head', 'conv')} heads) after {', '.join(exits['exits'])}; threshold "
             f"{dyn['threshold']:.4f} calibrated on "
             f"validation (at most {100 * doc['exit_max_drop']:g} points below the convnet alone there).", "",
             "| | test acc | avg MACs | batch 1 ms/sample | batch 256 ms/sample |", "|---|---|---|---|---|",
             f"| convnet alone | {100 * plain['test_acc']:.2f}% | {plain['macs']:,.0f} | "
             f"{latency['plain']['batch_1_ms']:.3f} | {latency['plain']['batch_256_ms']:.4f} |",
             f"| early exits, calibrated | {100 * dyn['test_acc_measured']:.2f}% | {dyn['macs']:,.0f} | "
             f"{latency['dynamic']['batch_1_ms']:.3f} | {latency['dynamic']['batch_256_ms']:.4f} |", "",
             "Share of test samples leaving at each exit: "
             + ", ".join(f"exit {k}: {100 * s:.1f}%" for k, s in enumerate(dyn["exit_shares"])) + ".", "",
             "| exit | MACs | test acc (always leaving there) |", "|---|---|---|"]
    lines += [f"| {r['exit']} | {r['macs']:,} | {100 * r['test_acc']:.2f}% |" for r in exits["per_exit"]]
    if "exits_conv_heads" in measured:
        first = measured["exits_conv_heads"]
        lines += ["", "The first run's plain `conv` heads (same exits and training): "
                  f"{first['plain']['macs'] / first['dynamic']['macs']:.2f}x fewer MACs, "
                  f"{first['plain']['latency']['batch_1_ms'] / first['dynamic']['latency']['batch_1_ms']:.2f}x "
                  f"at batch 1, {100 * (first['plain']['test_acc'] - first['dynamic']['test_acc_measured']):.2f} "
                  "points below (its latencies timed with autograd on); its "
                  "head after features.0 cost more at batch 1 than the block itself, hence the "
                  "pooled heads."]
    lines += ["", f"Accuracy against average MACs over thresholds: `{doc['plot']}`.", "",
              "Slimmable convnet: sandwich rule, every width each step, the narrower ones trained on the widest "
              f"one's predictions and the labels (`sandwich_loss` alpha {doc['sandwich_alpha']:g}); against convnets "
              "of each width trained alone with the same recipe.", "",
              "| width | slimmable test acc | alone test acc | MACs | slimmable batch 1 ms | alone batch 1 ms |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['width']:g} | {100 * r['slimmable']['test_acc']:.2f}% | {100 * r['alone']['test_acc']:.2f}% | "
              f"{r['slimmable']['macs']:,} | {r['slimmable']['batch_1_ms']:.3f} | {r['alone']['batch_1_ms']:.3f} |"
              for r in slim["rows"]]
    lines += ["", "Budgets (slimmable convnet, profile measured on validation and read back from its .nsk file):", "",
              "| budget | chosen | test acc | test latency ms/sample |", "|---|---|---|---|"]
    lines += [f"| {r['budget']:,.3f} {r['unit']} | width {r['chosen']['value']:g} | {100 * r['test_acc']:.2f}% | "
              f"{r['test_latency_ms']:.3f} |" for r in budgets["rows"]]
    if "protocol" in doc:
        lines += ["", f"Accuracy targets: mean ± std over seeds {', '.join(map(str, doc['protocol']['seeds']))}, "
                  "every model (the convnets alone too) trained with each seed; the tables above are seed 0."]
    lines += ["", f"Stage times summed: {measured['stage_minutes_summed']:.1f} min (each stage's seconds when it "
              f"ran, model training included); wall time of this invocation {measured['wall_seconds']:.0f} s.", "",
              targets_markdown(doc["targets"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["all", "exits", "slimmable", "budgets"], default="all",
                        help="run one stage (budgets needs the slimmable stage's model)")
    parser.add_argument("--quick", action="store_true",
                        help="every stage at tiny budgets on a data subset; writes only into --out")
    parser.add_argument("--out", default="runs/dynamic-benchmark", help="run folder (resumable stages)")
    parser.add_argument("--device", default="cpu", help="training device; latencies are always measured on the CPU")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every model (the plain convnet too) this many epochs instead of the recipe's; "
                             "for a CPU budget, recorded in the results")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    from netshrink.data import load_dataset

    began = time.perf_counter()
    data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    if args.quick:
        data = quick_subset(data, QUICK_SIZES)
    bench = Bench(data, Path(args.out), args.device, args.quick, args.epochs)
    stages = {"exits": stage_exits, "slimmable": stage_slimmable, "budgets": stage_budgets}
    measured: dict = {"device": f"{machine_info()['processor']} ({args.device} training)", "recipe": bench.recipe}
    for name, stage in stages.items():
        if args.stage in ("all", name):
            measured[name] = stage(bench)
            if name == "exits":
                measured["exit_latency"] = stage_exit_latency(bench, measured["exits"])
            print(f"{name}: done", flush=True)
    if args.stage != "all":
        return
    # the accuracy targets' other seeds (seed 0: the stages above)
    measured["seeds"] = {seed: {"exits": stage_exits(bench, seed), "slimmable": stage_slimmable(bench, seed)}
                         for seed in bench.study.seeds[1:]}
    earlier = bench.out / "exits.json"  # the first run's plain "conv" heads, kept for the record
    if earlier.exists():
        measured["exits_conv_heads"] = json.loads(earlier.read_text())
    measured["wall_seconds"] = time.perf_counter() - began
    measured["stage_seconds"] = bench.stages.seconds  # each model is trained inside the first stage using it
    measured["stage_minutes_summed"] = bench.stages.minutes()
    targets = build_targets(bench.study, measured)
    plot_path = (bench.out if args.quick else RESULTS) / PLOT_NAME
    plot(measured["exits"], plot_path)
    doc = bench.study.doc(measured, targets, device=measured["device"], quick=args.quick,
                          exit_max_drop=MAX_DROP, sandwich_alpha=SANDWICH_ALPHA, plot=repo_path(plot_path))
    if args.quick:
        write_atomically(bench.out / "dynamic.json", (json.dumps(doc, indent=2) + "\n").encode())
        print(markdown(doc))
    else:
        publish("dynamic", doc, markdown)

if __name__ == "__main__":
    main()
