"""What the user gives ``auto``, as the recipes need it: the ``[model]`` and ``[data]`` tables,
``OUT/original.nsk`` (the model every point's recipe starts from), and hand recipes' points."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from netshrink.core.errors import ConfigError
from netshrink.core.files import write_atomically

ORIGINAL = "original.nsk"
STATE = "auto.json"
STATE_VERSION = 1


def data_table(data: Any) -> dict[str, Any]:
    """The recipes' ``[data]`` table for ``data``: a name or path ``load_dataset`` reads, such a
    table, or a ``Dataset`` it loaded (split with seed 0, as a recipe reloads it)."""
    from netshrink.data import Dataset, load_dataset
    from netshrink.pipeline.recipe import BUILT_IN_DATA

    if isinstance(data, (str, os.PathLike)):
        table: dict[str, Any] = {"name": str(data)}
    elif isinstance(data, dict) and isinstance(data.get("name"), str):
        table = dict(data)
    elif isinstance(data, Dataset):
        if data.name not in BUILT_IN_DATA:
            raise ConfigError(f"data {data.name!r}: give the data as load_dataset reads it (a name, .npz path or "
                              "image folder): every point's recipe reloads it")
        table = {"name": data.name, "val_fraction": _fraction(len(data.val), len(data.train) + len(data.val))}
    else:
        raise ConfigError(f"data must be a data set name or path, a table with a name, or a Dataset, got "
                          f"{type(data).__name__}")
    if table["name"] not in BUILT_IN_DATA:
        table["name"] = str(Path(table["name"]).resolve())
    table["val_fraction"] = float(table.get("val_fraction", 0.1))
    if isinstance(data, Dataset):
        reloaded = load_dataset(table["name"], val_fraction=table["val_fraction"])
        if not torch.equal(reloaded.val.y, data.val.y):
            raise ConfigError(f"data {data.name!r} was split with another seed than recipes use (0); give it by name")
    return table


def _fraction(part: int, total: int) -> float:
    """The shortest decimal ``f`` with ``round(total * f) == part`` (``build_dataset``'s split size)."""
    exact = part / total
    return next((round(exact, digits) for digits in range(1, 8) if round(total * round(exact, digits)) == part), exact)


def model_table(model: nn.Module, builder: str | None, original: Path) -> dict[str, str]:
    """The recipes' ``[model]`` table: the original's file, with a builder for a user's class
    (default: the class itself, when it imports and takes no arguments)."""
    from netshrink.core.transform_log import get_arch
    from netshrink.pipeline.recipe import import_builder

    table = {"checkpoint": str(original)}
    if get_arch(model) is not None and builder is None:
        return table
    cls = type(model)
    if builder is None:
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise ConfigError(f"auto writes recipes that rebuild {cls.__name__} for `netshrink run`, which cannot "
                              f"import it from {cls.__module__}: give builder='package.module:function' returning an "
                              f"untrained {cls.__name__}")
        builder = f"{cls.__module__}:{cls.__qualname__}"
    problems: list[str] = []
    function = import_builder(builder, "builder", problems)
    if problems:
        raise ConfigError(problems[0])
    try:
        built = function()
    except Exception as error:  # noqa: BLE001 (the user's code)
        raise ConfigError(f"builder {builder!r} failed with no arguments ({type(error).__name__}: {error}); give "
                          f"builder='package.module:function' returning an untrained {cls.__name__}") from None
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if not isinstance(built, nn.Module) or {k: tuple(v.shape) for k, v in built.state_dict().items()} != shapes:
        raise ConfigError(f"builder {builder!r} does not build {cls.__name__}'s tensors; give one that does")
    return {"builder": builder, **table}


def write_original(model: nn.Module, out: Path, builder: str | None, data: dict[str, Any]) -> str:
    """Write ``OUT/original.nsk`` and ``OUT/auto.json`` (what the folder's search is of); refuse a
    folder holding another model's or data's search. Returns the original's SHA-256."""
    from torch.nn.utils import parametrize

    from netshrink.codec.container import save

    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ConfigError("the model still has parametrizations; finalize_(model) before auto")
    out.mkdir(parents=True, exist_ok=True)
    staged = out / f".{ORIGINAL}.new"
    save(model, staged)
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    state = {"version": STATE_VERSION, "original_sha256": digest, "data": data, "builder": builder}
    path = out / STATE
    if path.exists() and json.loads(path.read_text()) != state:
        staged.unlink()
        raise ConfigError(f"{out} holds the search of another model or data ({STATE}); give another out folder")
    os.replace(staged, out / ORIGINAL)
    write_atomically(path, json.dumps(state, indent=1).encode())
    return digest


def forget_original(out: Path) -> None:
    """Undo ``write_original`` in a folder it created (a refused search leaves nothing behind)."""
    for name in (ORIGINAL, STATE, "search/original.json", "text/calibration.txt", "text/validation.txt"):
        (out / name).unlink(missing_ok=True)
    for folder in (out / "search", out / "text", out):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def hand_points(hand: Sequence[Any], kind: str) -> list[dict[str, Any]]:
    """Hand recipes' points for the report: ``netshrink run`` report.json files (their last
    stage) or ``{"label", "cost", "val_accuracy"}`` dicts."""
    found = []
    for item in hand:
        try:
            if isinstance(item, dict):
                found.append({"label": str(item["label"]), "cost": float(item["cost"]),
                              "val_accuracy": float(item["val_accuracy"])})
                continue
            report = json.loads(Path(item).read_text())
            last = report["stages"][-1]
            cost = {"bytes": report["final"]["file_bytes"], "macs": last["macs"], "latency_ms": last["latency_ms"]}
            found.append({"label": report["recipe"], "cost": float(cost[kind]),
                          "val_accuracy": float(last["val_accuracy"])})
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            raise ConfigError(f"hand recipe {item}: not a `netshrink run` report.json nor a "
                              "{label, cost, val_accuracy} table") from None
    return found
