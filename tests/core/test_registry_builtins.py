"""Techniques are found through the ``netshrink.techniques`` entry-point group: netshrink's own, and a
user's installed package, each in a fresh process that never imported it; the core names no family."""

import importlib
import importlib.metadata
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import netshrink
from netshrink.core import registry


def _all_netshrink_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(netshrink.__path__, "netshrink.")
            if not info.name.endswith("__main__")]


def test_every_module_that_registers_a_technique_is_an_entry_point():
    """Import every netshrink module; each technique registered must come from a module of the group."""
    for name in _all_netshrink_modules():
        importlib.import_module(name)
    registering = {technique.handler.__module__ for technique in registry._BY_CONFIG.values()}
    registering -= {"netshrink.core.finalize"}  # imported with netshrink.core itself
    registering = {m for m in registering if m.startswith("netshrink.")}
    listed = {entry.value for entry in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert registering, "no built-in technique registered"
    assert not registering - listed, f"add {sorted(registering - listed)} to pyproject's netshrink.techniques"


def test_the_core_names_no_family():
    families = re.compile(r"netshrink\.(prune|quant|arch|dynamic|distill|pipeline|codec|cli)\b")
    core = Path(netshrink.__file__).parent / "core"
    named = {path.name: families.findall(path.read_text()) for path in core.glob("*.py")}
    assert not {name: found for name, found in named.items() if found}


def test_a_fresh_process_loads_a_pruned_file(tmp_path):
    from netshrink.codec.container import save
    from netshrink.core import finalize_
    from netshrink.models import create
    from netshrink.prune import MagnitudePrune, prune_

    model = create("lenet300_100", in_features=64)
    prune_(model, MagnitudePrune(sparsity=0.5))
    finalize_(model)
    save(model, tmp_path / "p.nsk")
    script = ("import sys, netshrink; m = netshrink.load(sys.argv[1]); "
              "print(sum(int((p == 0).sum()) for p in m.parameters()))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "p.nsk")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert int(done.stdout.strip()) >= int(0.5 * sum(p.numel() for n, p in model.named_parameters()
                                                      if n.endswith("weight")))


#: a user's own technique, a package of its own: widens the first hidden layer of lenet300_100 to
#: ``width`` neurons (a structural change its rebuilder redoes)
_USER_PACKAGE = '''
import dataclasses
import torch
from torch import nn
from netshrink.core import Config, NetshrinkFormatError, register


@dataclasses.dataclass(frozen=True)
class Widen(Config):
    width: int = 400


def _resize(model, width):
    model.fc1 = nn.Linear(model.fc1.in_features, width)
    model.fc2 = nn.Linear(width, model.fc2.out_features)


def _check(model, record):
    if not 1 <= record["config"]["width"] <= 4096:
        raise NetshrinkFormatError("width out of range")


@register(Widen, "user_widen", rebuild=lambda model, record: _resize(model, record["config"]["width"]),
          check=_check, structural=True)
def _widen(model, config):
    _resize(model, config.width)
'''


def _install_user_package(root: Path) -> None:
    (root / "user_widen").mkdir()
    (root / "user_widen" / "__init__.py").write_text(_USER_PACKAGE)
    info = root / "user_widen-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: user-widen\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[netshrink.techniques]\nuser_widen = user_widen\n")


def _python(script: str, *args: str, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(path)} if path is not None else {}
    import os

    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


def test_a_users_installed_technique_loads_in_a_fresh_process(tmp_path):
    """The save and the refusal run forked from this process (tests/forked.py: no second torch
    import; the user's package registers in the child only); the load is a fresh interpreter, as
    only one proves that the entry point is found."""
    from tests.forked import Forked

    _install_user_package(tmp_path)
    path = str(tmp_path / "w.nsk")

    def save_widened():
        sys.path.insert(0, str(tmp_path))
        import user_widen

        import netshrink
        from netshrink.models import create

        netshrink.save(netshrink.apply_(create("lenet300_100", in_features=64), user_widen.Widen(width=37)), path)

    saved = Forked(save_widened, [])
    assert saved.wait(timeout=300) == 0, saved.stderr_text()[-800:]
    # a fresh process that never imports user_widen: the entry point finds it
    loaded = _python("""
        import sys, netshrink
        model = netshrink.load(sys.argv[1])
        print(model.fc1.out_features, "user_widen" in sys.modules)
        """, path, path=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-800:]
    assert loaded.stdout.split() == ["37", "True"]

    # where the package is not installed, one line naming the verb
    def refuse():
        import netshrink

        try:
            netshrink.load(path)
        except netshrink.NetshrinkFormatError as error:
            sys.stderr.write(f"{error}\n")
            sys.exit(3)

    missing = Forked(refuse, [])
    assert missing.wait(timeout=300) == 3
    message = missing.stderr_text()
    assert "unknown verb 'user_widen'" in message and len(message.strip().splitlines()) == 1
