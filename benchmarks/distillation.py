"""Distillation benchmark (issue 9): Hinton et al. 2015 on Fashion-MNIST, convnet teachers.

    python benchmarks/distillation.py                    # every stage (resumable, see below)
    python benchmarks/distillation.py --epochs 40 --seeds 3 --jobs 14 --device cuda   # as published
    python benchmarks/distillation.py --stage teachers   # train the 2 extra convnet teachers only
    python benchmarks/distillation.py --stage ensemble --T 2  # one stage, T given instead of swept
    python benchmarks/distillation.py --quick --out runs/distill-quick   # tiny budgets, proves the script

Stages (every training run keeps its result in ``--out``, so a killed run continues where it stopped):

- ``teachers``: two more convnets (seeds 1 and 2, the baselines recipe) beside the kept
  ``benchmarks/checkpoints/convnet.safetensors`` (seed 0), kept as
  ``benchmarks/checkpoints/convnet_seed{1,2}.safetensors``; their training is itself resumable.
- ``sweep``: lenet300_100 (seed 0) distilled from the seed-0 convnet at T in (1, 2, 4, 8, 20),
  alpha 0.9, with its baselines recipe (``--epochs`` aside); T is picked on the validation split;
  a table and ``distillation_temperature.png``. The later stages but ``gap`` use that T.
- ``gap``: lenet300_100 and lenet5, each trained alone and distilled with seeds 0..N-1
  (``--seeds``), at every T of ``GAP_TEMPERATURES``; each student reported at the T with the best
  mean validation accuracy; gap closure = (distilled - alone) / (teacher - alone) in mean test
  accuracy, and per seed. A student alone is the kept baseline checkpoint only when that is exactly
  the run asked for (one seed, its recipe); otherwise it is trained here with the distilled runs'
  warm-up, so that alone and distilled differ only in the teacher.
- ``ensemble``: lenet300_100 taught by the 3 convnets (softened outputs averaged) against the
  same student taught by the best single one (best on validation).
- ``omit``: class 3 (Dress) left out of the transfer set; that class's test accuracy before and
  after the bias adjustment chosen on validation (Hinton et al. 2015, sec. 3).
- ``throughput``: training samples/s of the same student and teacher with and without the
  teacher-logit cache, no augmentation, run one after the other in the reporting process.

``--augment`` trains every student, alone and distilled, with online crop/flip augmentation, the
distilled ones from live teachers that see the same augmented batches (Beyer et al. 2022's
consistent teaching; a logit cache cannot hold augmented views). ``--jobs N`` plans the training
runs of the stages up front (``planned_runs``) and trains them in N processes at once (on a GPU,
small models leave it mostly idle, so parallel runs add up); the stages then read them back. Each
run records its device, so runs trained on a GPU can be reported by a later CPU invocation with
the same training flags and ``--out``.

``--views K`` makes the transfer set the training split plus K-1 copies of it randomly cropped and
flipped once, with a fixed seed (offline augmentation, Hinton et al. 2015 sec. 3's "transfer set"):
the copies are fixed before the teacher's logits are cached, so the cache stays valid. Every
student, alone and distilled, then trains on that same set (the kept baselines no longer apply, so
the students alone are trained here).

Writes ``benchmarks/results/distillation.json``, the plot beside it and the distillation section
of BENCHMARKS.md (``--quick`` writes only into ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.baselines import RECIPES  # noqa: E402
from benchmarks.common import (  # noqa: E402
    CHECKPOINTS,
    RESULTS,
    exit_with_parent,
    gap_closure,
    percent,
    publish,
    quick_subset,
    repo_path,
    results_doc,
    target,
    targets_markdown,
)
from benchmarks.study import SessionClock, seconds_by_device  # noqa: E402
from netshrink.core.files import write_atomically  # noqa: E402

TEACHER_SEEDS = (0, 1, 2)  # seed 0 is the kept baseline convnet
TEACHER_LOG = CHECKPOINTS / "distillation_teachers.json"
STUDENTS = ("lenet300_100", "lenet5")
SWEEP_STUDENT = "lenet300_100"
TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 20.0)
ALPHA = 0.9
#: distilled students warm their learning rate up linearly over this many epochs: the soft term's
#: gradient is up to T times the hard term's (T^2 * KL, sec. 2), and lenet5 at its recipe's lr 0.05
#: diverged in the first epoch without it (train loss 47, then chance accuracy)
WARMUP_EPOCHS = 1
OMITTED_CLASS = 3  # 'Dress', standing in for the paper's MNIST 3
QUICK_SIZES = {"train": 2000, "val": 1000, "test": 2000}
QUICK_EPOCHS = 1
PLOT_NAME = "distillation_temperature.png"
#: the gap stage distils every student at each of these and keeps the best on validation
GAP_TEMPERATURES = (1.0, 2.0)
GOALS = {"gap_closure": 0.40, "omitted_class_after": 0.85, "minutes": 90.0}


def teacher_path(seed: int, quick_dir: Path | None) -> Path:
    """The kept checkpoint of the convnet trained with ``seed`` (under ``quick_dir`` in quick mode)."""
    name = "convnet.safetensors" if seed == 0 else f"convnet_seed{seed}.safetensors"
    return (quick_dir / "teachers" / name) if quick_dir is not None else CHECKPOINTS / name


def recipe(name: str, quick: bool) -> dict:
    """The baselines recipe of a zoo model (one epoch in quick mode)."""
    return {**RECIPES[name], "epochs": QUICK_EPOCHS} if quick else dict(RECIPES[name])


def train_teachers(data, out: Path, device: str, quick: bool) -> dict[str, list[dict]]:
    """Train every missing teacher (seeds 1, 2; seed 0 too in quick mode) with the baselines recipe;
    the sessions (``SessionClock``) of each teacher trained now, by file name.

    Each run checkpoints into ``out/teacher_seed<k>`` and resumes there after a kill."""
    from netshrink.measure import evaluate
    from netshrink.models import create
    from netshrink.train import FitConfig, fit, save_model

    log = json.loads(TEACHER_LOG.read_text()) if TEACHER_LOG.exists() and not quick else {}
    trained = {}
    for seed in TEACHER_SEEDS:
        path = teacher_path(seed, out if quick else None)
        if path.exists():
            continue
        torch.manual_seed(seed)
        model = create("convnet", input_shape=list(data.input_shape), num_classes=data.num_classes)
        config = FitConfig(seed=seed, **recipe("convnet", quick))
        clock = SessionClock(out / f"teacher_seed{seed}", _device_name(device))
        result = fit(model, data, config, out_dir=out / f"teacher_seed{seed}", resume=True, device=device,
                     progress=sys.stderr.isatty(), callbacks=[clock])
        trained[path.name] = clock.stop()
        seconds = trained[path.name][-1]["seconds"]
        save_model(path, result.model.cpu())
        test_acc = evaluate(result.model.cpu(), data.test)
        print(f"teacher seed {seed}: val {result.val_acc:.4f} test {test_acc:.4f} in {seconds:.0f} s", flush=True)
        if not quick:
            log[path.name] = {"device": _device_name(device), "torch": torch.__version__,
                              "train_seconds_last_session": seconds, "sessions": trained[path.name],
                              "fit_config": config.to_dict(),
                              "val_acc": result.val_acc, "test_acc_at_training": test_acc,
                              "history": result.history}
            write_atomically(TEACHER_LOG, (json.dumps(log, indent=2) + "\n").encode())
    return trained


def _sessions(row: dict) -> list[dict]:
    """A training run's sessions (``SessionClock``); a row kept before sessions were recorded counts
    its last session only, on its recorded device."""
    return row.get("sessions") or [{"device": row.get("device", "cpu (not recorded)"),
                                    "seconds": row.get("seconds_last_session", row.get("train_seconds_last_session",
                                                                                         0.0))}]


def with_views(data, views: int, seed: int = 0):
    """``data`` whose training split is itself plus ``views - 1`` crop-and-flip copies made once."""
    import dataclasses

    from netshrink.data import Split, random_crop_flip

    if views <= 1:
        return data
    generator = torch.Generator().manual_seed(seed)
    x, y = data.train.x, data.train.y
    copies = [x] + [torch.cat([random_crop_flip(batch, generator) for batch in x.split(4096)])
                    for _ in range(views - 1)]
    return dataclasses.replace(data, train=Split(torch.cat(copies), y.repeat(views)))


def parse_epochs(text: str | None) -> dict[str, int] | None:
    """``--epochs``: ``N`` for every student, or ``name=N,name=N`` per student (the others keep their
    recipe's); alone and distilled alike."""
    if not text:
        return None
    try:
        if "=" not in text:
            return {name: _positive(text) for name in STUDENTS}
        pairs = dict(item.split("=", 1) for item in text.split(","))
        if unknown := set(pairs) - set(STUDENTS):
            raise ValueError(f"unknown student(s) {sorted(unknown)}")
        return {name: _positive(value) for name, value in pairs.items()}
    except ValueError as error:
        raise SystemExit(f"--epochs {text!r}: {error}; give N or e.g. lenet300_100=200,lenet5=40") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} epochs")
    return value


def _epochs_text(epochs: dict[str, int]) -> str:
    """``40`` when every student has the same count, else ``200 (lenet300_100) / 40 (lenet5)``."""
    counts = set(epochs.values())
    if len(counts) == 1 and set(epochs) == set(STUDENTS):
        return str(counts.pop())
    return " / ".join(f"{n} ({name})" for name, n in epochs.items())


def _epochs_flag(epochs: dict[str, int]) -> str:
    text = _epochs_text(epochs)
    return text if text.isdigit() else ",".join(f"{name}={n}" for name, n in epochs.items())


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


class Bench:
    """Shared state of the stages: data, teachers, and the run folder where every finished
    training run leaves ``result.json`` (a rerun reuses it; a killed run resumes from its checkpoint)."""

    def __init__(self, data, out: Path, device: str, quick: bool, views: int = 1,
                 epochs: int | dict[str, int] | None = None,
                 students: tuple[str, ...] = STUDENTS, augment: bool = False, seeds: int = 1,
                 evaluate_teachers: bool = True) -> None:
        from netshrink.measure import evaluate
        from netshrink.train import load_model

        self.data, self.out, self.device, self.quick = with_views(data, views), out, device, quick
        self.views, self.students, self.augment = views, students, augment
        self.epochs = {name: epochs for name in STUDENTS} if isinstance(epochs, int) else dict(epochs or {})
        self.seeds = tuple(range(seeds))  # of the students in the gap stage
        self.sessions: dict[Path, list[dict]] = {}  # of every reported training run, by its result file
        self.made_now: set[Path] = set()  # runs whose last session is this invocation's (in its wall time)
        self.teachers = {}
        for seed in TEACHER_SEEDS:
            path = teacher_path(seed, out if quick else None)
            if path.exists():
                model = load_model(path)
                self.teachers[seed] = {"model": model, "file": path.name}
                if evaluate_teachers:
                    self.teachers[seed].update(val_acc=evaluate(model, data.val), test_acc=evaluate(model, data.test))

    def recipe(self, name: str) -> dict:
        """A student's recipe: its baselines recipe, with its ``--epochs`` when given."""
        given = self.epochs.get(name) if not self.quick else None
        return {**recipe(name, self.quick), **({"epochs": given} if given else {})}

    def teacher_models(self, seeds: tuple[int, ...]):
        missing = [s for s in seeds if s not in self.teachers]
        if missing:
            raise SystemExit(f"teacher(s) with seed {missing} are not trained yet; run --stage teachers first")
        return [self.teachers[s]["model"] for s in seeds]

    def student(self, name: str, seed: int = 0):
        from netshrink.models import create_for_data

        torch.manual_seed(seed)
        return create_for_data(name, self.data.input_shape, self.data.num_classes)

    def _suffix(self, seed: int, augment: bool) -> str:
        """Run-folder tag of the student seed (none for 0), augmentation and transfer-set views."""
        return (f"{f'_s{seed}' if seed else ''}{'_aug' if augment else ''}"
                f"{f'_views{self.views}' if self.views > 1 else ''}")

    def _alone_setup(self, name: str, seed: int):
        """The kept baseline checkpoint of ``name`` when it is this student alone (one seed, 0, its
        recipe without augmentation or views, the FitConfig stored in training.json), its FitConfig,
        and the run folder (None with the checkpoint). With several seeds every one is trained here,
        so that their mean mixes no recipes; a run trained here takes the distilled runs' warm-up,
        so that alone and distilled differ only in the teacher."""
        import dataclasses

        from netshrink.train import FitConfig

        config = FitConfig(seed=seed, **{**self.recipe(name), "augment": self.augment})
        training = json.loads((CHECKPOINTS / "training.json").read_text()) if not self.quick else {}
        kept = CHECKPOINTS / f"{name}.safetensors"
        if len(self.seeds) == 1 and seed == 0 and self.views == 1 and kept.exists() and _same_config(
                training.get(name, {}).get("fit_config"), config):
            return kept, config, None
        config = dataclasses.replace(config, warmup_epochs=WARMUP_EPOCHS)
        run = self.out / f"{name}_alone_e{config.epochs}_w{config.warmup_epochs}{self._suffix(seed, self.augment)}"
        return None, config, run

    def alone_run(self, name: str, seed: int = 0) -> Path | None:
        """The run folder of ``name`` trained alone with ``seed`` (None: the kept checkpoint is it)."""
        return self._alone_setup(name, seed)[2]

    def alone(self, name: str, seed: int = 0) -> dict:
        """The student trained alone with its recipe (see ``_alone_setup``)."""
        from netshrink.measure import evaluate
        from netshrink.train import fit, load_model

        kept, config, run = self._alone_setup(name, seed)
        if kept is not None:
            model = load_model(kept)
            return {"source": f"benchmarks/checkpoints/{kept.name}", "seed": 0, "fit_config": config.to_dict(),
                    "val_acc": evaluate(model, self.data.val), "test_acc": evaluate(model, self.data.test)}
        done = run / "result.json"
        if done.exists():
            return self._reused(done)
        clock = SessionClock(run, _device_name(self.device))
        result = fit(self.student(name, seed), self.data, config, out_dir=run, resume=True, device=self.device,
                     progress=sys.stderr.isatty(), callbacks=[clock])
        sessions = clock.stop()
        row = {"source": "trained here", "seed": seed, "views": self.views, "fit_config": config.to_dict(),
               "device": _device_name(self.device), "val_acc": result.val_acc,
               "test_acc": evaluate(result.model, self.data.test, device=self.device),
               "seconds_last_session": sessions[-1]["seconds"], "sessions": sessions}
        print(f"{run.name}: val {row['val_acc']:.4f} test {row['test_acc']:.4f}", flush=True)
        write_atomically(done, (json.dumps(row, indent=2) + "\n").encode())
        self.made_now.add(done)
        return self._counted(done, row)

    def run_folder(self, kind: str, kwargs: dict) -> Path | None:
        """The folder of a planned run: ``kind`` "alone" or "distilled", with that method's arguments."""
        return self.alone_run(**kwargs) if kind == "alone" else self.distilled_run(**kwargs)

    def run(self, kind: str, kwargs: dict) -> dict:
        """A planned run's result (trained now, or reused)."""
        return self.alone(**kwargs) if kind == "alone" else self.distilled(**kwargs)

    def _reused(self, done: Path) -> dict:
        """A finished run's kept result; its training seconds count towards the benchmark's time."""
        return self._counted(done, json.loads(done.read_text()))

    def _counted(self, done: Path, row: dict) -> dict:
        self.sessions.setdefault(done, _sessions(row))
        return row

    def earlier_seconds(self) -> float:
        """Seconds of the reported runs' sessions outside this invocation's wall time: every session of
        a run finished before it, the earlier (killed) sessions of a run finished by it."""
        return sum(s["seconds"] for done, sessions in self.sessions.items()
                   for s in (sessions[:-1] if done in self.made_now else sessions))

    def _distilled_setup(self, student: str, seeds: tuple[int, ...], T: float, cache: bool | None,
                         omit: tuple[int, ...], epochs: int | None, seed: int, augment: bool | None,
                         own_cache: bool = False):
        """Distill config, FitConfig and run folder of one distillation run. ``cache`` None: the
        teacher-logit cache exactly when the run has no augmentation (with it the live teachers see
        each augmented batch the student sees: consistent teaching, Beyer et al. 2022 sec. 3)."""
        from netshrink.distillation import Distill
        from netshrink.train import FitConfig

        augment = self.augment if augment is None else augment
        cache = not augment if cache is None else cache
        config = Distill(T=T, alpha=ALPHA, cache_teacher=cache, omit_classes=omit)
        fit_config = FitConfig(seed=seed, **{**self.recipe(student), **({"epochs": epochs} if epochs else {}),
                                              "warmup_epochs": WARMUP_EPOCHS, "augment": augment})
        tag = (f"{student}_T{T:g}_a{ALPHA:g}_teachers{'-'.join(map(str, seeds))}_e{fit_config.epochs}"
               f"_w{WARMUP_EPOCHS}{'_cache' if cache else '_live'}{''.join(f'_omit{c}' for c in omit)}"
               f"{self._suffix(seed, augment)}{'_owncache' if own_cache else ''}")
        return config, fit_config, self.out / tag

    def distilled_run(self, student: str, seeds: tuple[int, ...], T: float, cache: bool | None = None,
                      omit: tuple[int, ...] = (), epochs: int | None = None, seed: int = 0,
                      augment: bool | None = None, own_cache: bool = False) -> Path:
        """The run folder of ``distilled`` with the same arguments."""
        return self._distilled_setup(student, seeds, T, cache, omit, epochs, seed, augment, own_cache)[2]

    def distilled(self, student: str, seeds: tuple[int, ...], T: float, cache: bool | None = None,
                  omit: tuple[int, ...] = (), epochs: int | None = None, seed: int = 0,
                  augment: bool | None = None, own_cache: bool = False) -> dict:
        """One distillation run of ``student`` (initialised and trained with ``seed``) from the
        teachers of ``seeds`` (resumable; its result kept in ``<run>/result.json``). ``own_cache``:
        the run builds its teacher-logit cache itself (in its time) instead of linking a shared one."""
        from netshrink.distillation import distill
        from netshrink.measure import evaluate

        config, fit_config, run = self._distilled_setup(student, seeds, T, cache, omit, epochs, seed, augment,
                                                        own_cache)
        cache, tag = config.cache_teacher, run.name
        done = run / "result.json"
        if done.exists():
            return self._reused(done)
        shared = self.out / "logit_caches" / (f"teachers{'-'.join(map(str, seeds))}{''.join(f'_omit{c}' for c in omit)}"
                                               f"{f'_views{self.views}' if self.views > 1 else ''}")
        if not own_cache:
            _link(shared, run / "teacher_logits.safetensors")  # the same teachers' logits on the same data
        clock = SessionClock(run, _device_name(self.device))
        result = distill(self.student(student, seed), self.teacher_models(seeds), self.data, config, fit_config,
                         out_dir=run, resume=True, device=self.device, progress=sys.stderr.isatty(),
                         callbacks=[clock])
        sessions = clock.stop()
        _link(run / "teacher_logits.safetensors", shared)
        model = result.model
        row = {"student": student, "teachers": [self.teachers[s]["file"] for s in seeds], "T": T, "alpha": ALPHA,
               "cache_teacher": cache, "omit_classes": list(omit), "seed": seed, "views": self.views,
               "fit_config": fit_config.to_dict(), "device": _device_name(self.device),
               "val_acc": result.val_acc, "test_acc": evaluate(model, self.data.test, device=self.device),
               "seconds_last_session": sessions[-1]["seconds"], "sessions": sessions, "own_cache": own_cache,
               "train_samples": len(self.data.train), "samples_per_s": [h["samples_per_s"] for h in result.history]}
        if omit:
            row.update(self._bias_adjustment(model, omit))
        write_atomically(done, (json.dumps(row, indent=2) + "\n").encode())
        self.made_now.add(done)
        print(f"{tag}: val {row['val_acc']:.4f} test {row['test_acc']:.4f}", flush=True)
        return self._counted(done, row)

    def _bias_adjustment(self, model, omit: tuple[int, ...]) -> dict:
        """Omitted classes' test accuracy before and after the bias raise chosen on validation."""
        from netshrink.distillation import choose_class_bias, raise_class_bias_
        from netshrink.measure.accuracy import predict_logits

        def per_class():
            predicted = predict_logits(model, self.data.test.x, device=self.device).argmax(1)
            return {str(c): float((predicted[self.data.test.y == c] == c).float().mean()) for c in omit}, \
                float((predicted == self.data.test.y).float().mean())

        before, test_before = per_class()
        amount, val_acc = choose_class_bias(model, self.data.val, omit)
        raise_class_bias_(model, omit, amount, self.data.val.x[:2])
        after, test_after = per_class()
        return {"bias_raise": amount, "val_acc_after_bias": val_acc, "omitted_test_acc_before": before,
                "omitted_test_acc_after": after, "test_acc_after_bias": test_after}


def _same_config(stored: dict | None, config) -> bool:
    """Whether a stored FitConfig dict (older ones lack later fields, which take defaults) is ``config``."""
    from netshrink.core.errors import ConfigError
    from netshrink.train import FitConfig

    try:
        return stored is not None and FitConfig.from_dict(stored) == config
    except ConfigError:
        return False


def _link(source: Path, destination: Path) -> None:
    """Hard-link ``source`` to ``destination`` when the first exists and the second does not (a
    parallel run that linked it first wins)."""
    if source.exists() and not destination.exists():
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except FileExistsError:
            pass


def stage_sweep(bench: Bench) -> dict:
    """Temperature sweep on lenet300_100 from the seed-0 teacher; T picked on validation."""
    rows = [bench.distilled(SWEEP_STUDENT, (0,), T) for T in TEMPERATURES]
    best = max(rows, key=lambda r: (r["val_acc"], -r["T"]))
    return {"rows": rows, "chosen_T": best["T"], "chosen_on": "validation accuracy"}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def stage_gap(bench: Bench, T: float | None = None) -> dict:
    """Gap closure per student: (distilled - alone) / (teacher - alone) in test accuracy, each side
    the mean over the student seeds (``--seeds``); each student distilled at every T of
    ``GAP_TEMPERATURES`` and reported at the one with the best mean validation accuracy (Hinton et
    al. 2015 sec. 2.1: a small student learns best at intermediate temperatures, and which one
    differs from student to student, so each picks its own). ``T`` (the sweep's) is not used."""
    teacher_acc = bench.teachers[0]["test_acc"]
    out = {}
    for name in bench.students:
        alone = [bench.alone(name, seed) for seed in bench.seeds]
        by_T = {t: [bench.distilled(name, (0,), t, seed=seed) for seed in bench.seeds] for t in GAP_TEMPERATURES}
        best_T = max(by_T, key=lambda t: (_mean(r["val_acc"] for r in by_T[t]), t))
        distilled = by_T[best_T]
        alone_acc, distilled_acc = _mean(r["test_acc"] for r in alone), _mean(r["test_acc"] for r in distilled)
        per_seed = {str(a["seed"]): gap_closure(d["test_acc"], a["test_acc"], teacher_acc)
                    for a, d in zip(alone, distilled, strict=True)}
        out[name] = {"seeds": list(bench.seeds), "alone": alone, "distilled": distilled, "T": best_T,
                     "alone_test_acc": alone_acc, "distilled_test_acc": distilled_acc,
                     "teacher_test_acc": teacher_acc,
                     "validation_of_temperatures": {f"{t:g}": _mean(r["val_acc"] for r in rows)
                                                    for t, rows in by_T.items()},
                     "gap_closure": gap_closure(distilled_acc, alone_acc, teacher_acc),
                     "gap_closure_per_seed": per_seed}
    return out


def best_single_teacher(bench: Bench) -> int:
    """The seed of the teacher with the best validation accuracy."""
    return max(TEACHER_SEEDS, key=lambda s: bench.teachers[s]["val_acc"] if s in bench.teachers else -1)


def stage_ensemble(bench: Bench, T: float) -> dict:
    """The 3 convnets as one ensemble against the best single one (best on validation)."""
    best_seed = best_single_teacher(bench)
    single = bench.distilled(SWEEP_STUDENT, (best_seed,), T)
    ensemble = bench.distilled(SWEEP_STUDENT, TEACHER_SEEDS, T)
    return {"best_single_seed": best_seed, "single": single, "ensemble": ensemble,
            "teachers": {s: {k: v for k, v in t.items() if k != "model"} for s, t in bench.teachers.items()}}


def stage_omit(bench: Bench, T: float) -> dict:
    """Class 3 left out of the transfer set; the bias raise chosen on validation."""
    return bench.distilled(SWEEP_STUDENT, (0,), T, omit=(OMITTED_CLASS,))


def stage_throughput(bench: Bench, T: float) -> dict:
    """Training samples/s with and without the logit cache, same student and teacher, no
    augmentation (the cache needs none): whole runs, every session, the cached run building its
    cache itself (its teacher pass is in its time)."""
    epochs = QUICK_EPOCHS if bench.quick else 2
    runs = {"cached": bench.distilled(SWEEP_STUDENT, (0,), T, cache=True, epochs=epochs, augment=False, own_cache=True),
            "live": bench.distilled(SWEEP_STUDENT, (0,), T, cache=False, epochs=epochs, augment=False, own_cache=True)}
    rate = {name: epochs * row["train_samples"] / sum(s["seconds"] for s in row["sessions"])
            for name, row in runs.items()}
    return {"epochs": epochs, "samples_per_s": rate, "speedup": rate["cached"] / rate["live"], "runs": runs,
            "includes_cache_build": True,
            "note": "whole runs (every session, evaluation after each epoch included), the cached one building its "
                    "teacher-logit cache itself"}


def planned_runs(bench: Bench, T: float | None) -> list[tuple[str, dict]]:
    """The training runs the stages will ask for, as ``(kind, arguments)`` without duplicates:
    before the sweep (``T`` None) the gap stage's and the sweep's, after it the ensemble's and the
    omitted class's. ``prefetch`` trains them in parallel; the stages then find them finished."""
    if T is None:
        specs = [("alone", {"name": name, "seed": seed}) for name in bench.students for seed in bench.seeds]
        specs += [("distilled", {"student": name, "seeds": (0,), "T": t, "seed": seed})
                  for name in bench.students for seed in bench.seeds for t in GAP_TEMPERATURES]
        specs += [("distilled", {"student": SWEEP_STUDENT, "seeds": (0,), "T": t, "seed": 0}) for t in TEMPERATURES]
    else:
        specs = [("distilled", {"student": SWEEP_STUDENT, "seeds": seeds, "T": T, "seed": 0})
                 for seeds in ((best_single_teacher(bench),), TEACHER_SEEDS)]
        specs.append(("distilled", {"student": SWEEP_STUDENT, "seeds": (0,), "T": T, "seed": 0,
                                    "omit": (OMITTED_CLASS,)}))
        # the throughput runs are left to their stage: timed one after the other, not beside other runs
    unique, folders = [], set()
    for kind, kwargs in specs:
        folder = bench.run_folder(kind, kwargs)
        if folder is not None and folder not in folders:
            folders.add(folder)
            unique.append((kind, kwargs))
    return unique


_WORKER_BENCH: Bench | None = None


def _start_worker(bench_args: dict, data_dir: str | None) -> None:
    """A prefetch worker process: one CPU thread, its own copy of the data and teachers; it ends
    when the invocation that started it dies."""
    global _WORKER_BENCH
    from netshrink.data import load_dataset

    exit_with_parent()
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist", data_dir=data_dir)
    if bench_args["quick"]:
        data = quick_subset(data, QUICK_SIZES)
    _WORKER_BENCH = Bench(data, **bench_args, evaluate_teachers=False)


def _train(kind: str, kwargs: dict) -> tuple[str, bool]:
    """Train one planned run in a worker; its result file and whether it was already finished."""
    done = _WORKER_BENCH.run_folder(kind, kwargs) / "result.json"
    finished = done.exists()
    _WORKER_BENCH.run(kind, kwargs)
    return str(done), finished


def prefetch(bench: Bench, specs: list[tuple[str, dict]], jobs: int, bench_args: dict, data_dir: str | None) -> None:
    """Train ``specs`` in ``jobs`` processes at once (one device is shared; on a GPU, small models
    leave it mostly idle, so parallel runs add up). Runs trained here count towards this
    invocation's wall time, not as reused."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker,
                             initargs=(bench_args, data_dir)) as pool:
        for done, finished in pool.map(_train, *zip(*specs, strict=True)):
            if not finished:
                bench.made_now.add(Path(done))


def plot(sweep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperatures = [r["T"] for r in sweep["rows"]]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot(temperatures, [100 * r["val_acc"] for r in sweep["rows"]], "o-", label="validation")
    axes.plot(temperatures, [100 * r["test_acc"] for r in sweep["rows"]], "s--", label="test")
    axes.set_xscale("log")
    axes.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
    axes.set_xlabel("temperature T")
    axes.set_ylabel(f"{SWEEP_STUDENT} accuracy (%)")
    axes.set_title(f"Distillation from the convnet, alpha={ALPHA}")
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def runs_by_device(measured: dict) -> dict[str, int]:
    """How many of the distinct reported training runs ran on each device (runs can be reused from an
    invocation on another machine, e.g. a GPU; rows from before devices were recorded ran on the CPU)."""
    import collections

    gap = [row for student in measured["gap"].values() for row in student["alone"] + student["distilled"]]
    rows = (measured["sweep"]["rows"] + gap + [measured["ensemble"]["single"], measured["ensemble"]["ensemble"]]
            + [measured["omit"]] + list(measured["throughput"]["runs"].values()))
    distinct = {json.dumps(row, sort_keys=True): row for row in rows}.values()  # a run reported twice once
    counts = collections.Counter(
        row.get("device") or ("cpu (kept checkpoint)" if row.get("source", "").startswith("benchmarks/checkpoints/")
                              else "cpu (not recorded)") for row in distinct)
    return dict(counts)


def build_targets(measured: dict) -> list[dict]:
    """The issue's targets; a gap closure is undefined (and left out, see ``notes``) when the
    student alone is not below the teacher, which happens only at ``--quick`` budgets."""
    targets = [target(f"{name} gap closure (test)", row["gap_closure"], GOALS["gap_closure"], ">=")
               for name, row in measured["gap"].items() if row["gap_closure"] is not None]
    ensemble = measured["ensemble"]
    targets.append(target("ensemble-taught minus best-single-taught test accuracy",
                          ensemble["ensemble"]["test_acc"] - ensemble["single"]["test_acc"], 0.0, ">="))
    after = measured["omit"]["omitted_test_acc_after"][str(OMITTED_CLASS)]
    targets.append(target(f"class {OMITTED_CLASS} test accuracy after the bias raise", after,
                          GOALS["omitted_class_after"], ">="))
    targets.append(target("whole benchmark: this invocation plus every earlier session of its runs and extra "
                          "teachers (min)", measured["minutes_all_sessions"], GOALS["minutes"], "<="))
    return targets


def not_measured(measured: dict) -> list[str]:
    return [f"{name} gap closure: the student alone ({row['alone_test_acc']:.4f}) is not below the teacher"
            for name, row in measured["gap"].items() if row["gap_closure"] is None]


def _throughput(speed: dict) -> str:
    rates = speed["samples_per_s"]
    if not speed.get("includes_cache_build"):  # a results file from before issue 20: best epochs, no cache build
        return (f"Training throughput, same run: {rates['cached']:.0f} samples/s with the teacher-logit cache, "
                f"{rates['live']:.0f} without ({speed['speedup']:.1f}x).")
    return (f"Training throughput, {speed['epochs']} epochs: {rates['cached']:.0f} samples/s with the teacher-logit "
            f"cache, its building included, {rates['live']:.0f} without ({speed['speedup']:.1f}x; {speed['note']}).")


def _time_line(measured: dict) -> str:
    if "minutes_all_sessions" not in measured:  # a results file from before issue 20
        return (f"Wall time of this invocation: {measured['wall_seconds']:.0f} s, plus "
                f"{measured['reused_runs_seconds']:.0f} s of training runs finished by earlier invocations and reused "
                "(teachers trained once and kept).")
    by_device = {device: measured["run_seconds_by_device"].get(device, 0.0)
                 + measured["teacher_seconds_by_device"].get(device, 0.0)
                 for device in {**measured["run_seconds_by_device"], **measured["teacher_seconds_by_device"]}}
    return (f"Time: {measured['minutes_all_sessions']:.1f} min, this invocation's {measured['wall_seconds']:.0f} s "
            f"plus {measured['earlier_sessions_seconds']:.0f} s of earlier sessions of its training runs and of the "
            "teachers trained for it (seeds 1 and 2; all three with --quick). Training time by device, every "
            "session of every run reported and of those teachers: "
            + ", ".join(f"{device} {seconds:.0f} s" for device, seconds in by_device.items()) + ".")


def markdown(doc: dict) -> str:
    """The distillation section of BENCHMARKS.md, from the results file alone."""
    measured, quick = doc["measurements"], doc["quick"]
    sweep, gap, ens, omit, speed = (measured[k] for k in ("sweep", "gap", "ensemble", "omit", "throughput"))
    flags = "".join([" --quick" if quick else "", " --augment" if measured["augment"] else "",
                     f" --views {measured['views']}" if measured["views"] > 1 else "",
                     f" --epochs {_epochs_flag(measured['student_epochs'])}" if measured["student_epochs"] else "",
                     f" --seeds {measured['student_seeds']}" if measured["student_seeds"] > 1 else "",
                     f" --jobs {measured['jobs']}" if measured["jobs"] > 1 else "",
                     f" --device {measured['device_arg']}" if measured["device_arg"] != "cpu" else ""])
    training = ("online crop/flip augmentation for every student, alone and distilled; distilled ones from live "
                "teachers that see the same augmented batches (consistent teaching, Beyer et al. 2022)"
                if measured["augment"] else "no online augmentation, so the cached teacher logits are valid")
    lines = ["## Distillation (Fashion-MNIST)", "",
             f"`python benchmarks/distillation.py{flags}`{' (tiny budgets, not the real figures)' if quick else ''}"
             f" on {measured['device']}; teacher: the kept convnet (seed 0); alpha = {doc['alpha']}; every student "
             "with its baselines recipe"
             + (f" but {_epochs_text(measured['student_epochs'])} epochs" if measured["student_epochs"] else "")
             + f"; {training}"
             + (f"; transfer set: the training split and {measured['views'] - 1} fixed crop/flip copies"
                if measured["views"] > 1 else "")
             + f"; every student trained here (alone or distilled) warms its lr up over "
             f"{measured['distilled_warmup_epochs']} epoch (lenet5 diverged without it). The sweep: lenet300_100, "
             "seed 0; T picked on validation.", "",
             "| T | val acc | test acc |", "|---|---|---|"]
    lines += [f"| {r['T']:g} | {100 * r['val_acc']:.2f}% | {100 * r['test_acc']:.2f}% |" for r in sweep["rows"]]
    lines += ["", f"Chosen T = {sweep['chosen_T']:g} (validation). Plot: `{doc['plot']}`.", "",
              "| student | seeds | alone (test, mean) | distilled (test, mean) | T (validation) | teacher (test) "
             "| gap closed (mean) | gap closed per seed |", "|---|---|---|---|---|---|---|---|"]
    for name, row in gap.items():
        closure = percent(row["gap_closure"])
        per_seed = ", ".join(percent(c) for c in row["gap_closure_per_seed"].values())
        lines.append(f"| {name} | {', '.join(map(str, row['seeds']))} | {100 * row['alone_test_acc']:.2f}% | "
                     f"{100 * row['distilled_test_acc']:.2f}% | {row['T']:g} | {100 * row['teacher_test_acc']:.2f}% | "
                     f"{closure} | {per_seed} |")
    lines += ["", "Whether any transfer set, loss or schedule lifts lenet300_100 further, "
              "and whether its width or its teacher's family is the limit: two retired studies, "
              "below and in docs/design.md."]
    omitted = str(omit["omit_classes"][0])
    lines += ["", f"Ensemble of {len(ens['teachers'])} convnets: student {100 * ens['ensemble']['test_acc']:.2f}% "
              f"against {100 * ens['single']['test_acc']:.2f}% taught by the best single one "
              f"(seed {ens['best_single_seed']}).",
              "", f"Class {omitted} left out of the transfer set: its test accuracy "
              f"{100 * omit['omitted_test_acc_before'][omitted]:.1f}% before, "
              f"{100 * omit['omitted_test_acc_after'][omitted]:.1f}% after raising its bias by "
              f"{omit['bias_raise']:g} (chosen on validation); overall test "
              f"{100 * omit['test_acc']:.2f}% -> {100 * omit['test_acc_after_bias']:.2f}%.", "",
              _throughput(speed), "",
              "Training runs by device: " + ", ".join(f"{n} on {d}" for d, n in measured["runs_by_device"].items())
              + (" (the runs on another device than this invocation's were trained by an earlier invocation "
                 "with the same training flags and that `--device`, then read back from `--out`)"
                 if len(measured["runs_by_device"]) > 1 else "") + ".", "",
              _time_line(measured),
              "", targets_markdown(doc["targets"])] + [f"\nNot measured: {line}." for line in doc["not_measured"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["all", "teachers", "sweep", "gap", "ensemble", "omit", "throughput"],
                        default="all", help="run one stage (later stages need the sweep's T, run or reused)")
    parser.add_argument("--quick", action="store_true",
                        help="every stage at tiny budgets on a data subset; writes only into --out")
    parser.add_argument("--out", default="runs/distillation-benchmark", help="run folder (resumable stages)")
    parser.add_argument("--T", type=float, default=None,
                        help="with a single later stage: use this T instead of running the sweep to pick it")
    parser.add_argument("--students", default=",".join(STUDENTS),
                        help="comma-separated students of the gap stage (default: all)")
    parser.add_argument("--views", type=int, default=1,
                        help="transfer set: the training split plus views-1 fixed crop/flip copies (every student)")
    parser.add_argument("--epochs", default=None,
                        help="N: every student N epochs instead of its recipe's; or per student, e.g. "
                             "lenet300_100=200,lenet5=40 (alone and distilled alike)")
    parser.add_argument("--augment", action="store_true",
                        help="every student, alone and distilled, with online crop/flip augmentation; distilled "
                             "ones from live teachers that see the same augmented batches (no logit cache)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="students of the gap stage trained with seeds 0..N-1 (alone and distilled); "
                             "gap closure on the mean")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train up to this many runs at once, in separate processes (all stages)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.seeds < 1 or args.jobs < 1:
        raise SystemExit("--seeds and --jobs must be at least 1")
    from netshrink.data import load_dataset

    began = time.perf_counter()
    data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    if args.quick:
        data = quick_subset(data, QUICK_SIZES)
    out = Path(args.out)
    teachers_now = train_teachers(data, out, args.device, args.quick) if args.stage in ("all", "teachers") else {}
    if args.stage == "teachers":
        return
    students = tuple(s for s in args.students.split(",") if s)
    if unknown := set(students) - set(STUDENTS):
        raise SystemExit(f"--students: unknown {sorted(unknown)}; choose from {list(STUDENTS)}")
    bench_args = {"out": out, "device": args.device, "quick": args.quick, "views": args.views,
                  "epochs": parse_epochs(args.epochs), "students": students, "augment": args.augment,
                  "seeds": args.seeds}
    bench = Bench(data, **bench_args)
    measured = {"device": _device_name(args.device), "device_arg": args.device, "views": args.views,
                "augment": args.augment,
                "student_seeds": args.seeds, "jobs": args.jobs,
                "student_epochs": None if args.quick else bench_args["epochs"],
                "distilled_warmup_epochs": WARMUP_EPOCHS}
    parallel = args.jobs > 1 and args.stage == "all"
    if parallel:
        prefetch(bench, planned_runs(bench, None), args.jobs, bench_args, args.data_dir)
    if args.stage == "gap":  # each student picks its own T among GAP_TEMPERATURES
        T = None
    elif args.T is not None and args.stage not in ("all", "sweep"):
        T = args.T
    else:
        measured["sweep"] = stage_sweep(bench)
        T = measured["sweep"]["chosen_T"]
        print(f"sweep: chosen T = {T:g} (validation)", flush=True)
    if parallel:
        prefetch(bench, planned_runs(bench, T), args.jobs, bench_args, args.data_dir)
    stages = {"gap": stage_gap, "ensemble": stage_ensemble, "omit": stage_omit, "throughput": stage_throughput}
    for name, stage in stages.items():
        if args.stage in ("all", name):
            measured[name] = stage(bench, T)
            print(f"{name}: done", flush=True)
    if args.stage != "all":
        return
    measured["runs_by_device"] = runs_by_device(measured)
    measured["wall_seconds"] = time.perf_counter() - began
    log = json.loads(TEACHER_LOG.read_text()) if TEACHER_LOG.exists() and not args.quick else {}
    teachers = {**{name: _sessions(entry) for name, entry in log.items()}, **teachers_now}  # the extra ones
    measured["teacher_seconds_by_device"] = seconds_by_device([s for ss in teachers.values() for s in ss])
    measured["run_seconds_by_device"] = seconds_by_device([s for ss in bench.sessions.values() for s in ss])
    measured["earlier_sessions_seconds"] = bench.earlier_seconds() + sum(
        s["seconds"] for name, ss in teachers.items() for s in (ss[:-1] if name in teachers_now else ss))
    measured["minutes_all_sessions"] = (measured["wall_seconds"] + measured["earlier_sessions_seconds"]) / 60
    targets = build_targets(measured)
    plot_path = (out if args.quick else RESULTS) / PLOT_NAME
    plot(measured["sweep"], plot_path)
    doc = results_doc("distillation", measured, targets, device=measured["device"], quick=args.quick, alpha=ALPHA,
                      plot=repo_path(plot_path), not_measured=not_measured(measured))
    if args.quick:
        write_atomically(out / "distillation.json", (json.dumps(doc, indent=2) + "\n").encode())
        print(markdown(doc))
    else:
        publish("distillation", doc, markdown)

if __name__ == "__main__":
    main()
