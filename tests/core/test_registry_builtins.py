"""A fresh process loads a file of any built-in technique without importing its family first."""

import importlib
import pkgutil
import subprocess
import sys

import netshrink
from netshrink.core import registry


def _all_netshrink_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(netshrink.__path__, "netshrink.")
            if not info.name.endswith("__main__")]


def test_every_module_that_registers_a_technique_is_a_builtin():
    """Import every netshrink module; each technique registered must come from a listed module."""
    for name in _all_netshrink_modules():
        importlib.import_module(name)
    registering = {technique.handler.__module__ for technique in registry._BY_VERB.values()}
    registering -= {"netshrink.core.finalize"}  # imported with netshrink.core itself
    registering = {m for m in registering if m.startswith("netshrink.")}
    unlisted = registering - set(registry.BUILTIN_TECHNIQUE_MODULES)
    assert not unlisted, f"add {sorted(unlisted)} to BUILTIN_TECHNIQUE_MODULES"


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
