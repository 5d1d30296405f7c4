"""A trained user MLP and a small search space, shared by the auto tests."""

import pytest
import torch

from netshrink.autocompress import Budget, PointSpec, Recovery, SearchSpace, auto
from netshrink.train import FitConfig, fit
from tests.models import UserMLP

#: small enough to measure in a second on digits
SPACE = SearchSpace(sparsities=(0.0, 0.5, 0.8), cluster_bits=(2, 4, 8), int_bits=(4,), amounts=(0.5,))
RECOVERY = Recovery(epochs=1, cluster_epochs=1, batch_size=256)
#: a one-shot point at the limit, the limit trained, and a looser limit trained
SCHEDULE = (PointSpec(1.0, "kl", 0), PointSpec(1.0, "kl", 1), PointSpec(1.5, "kl", 1))


@pytest.fixture(scope="session")
def trained_mlp(digits):
    """UserMLP (a user's class, not in the zoo) trained briefly on digits."""
    torch.manual_seed(0)
    model = UserMLP()
    fit(model, digits, FitConfig(epochs=6, lr=0.05, batch_size=64), progress=False)
    return model.eval()
BUDGET = Budget(max_bytes="6x", max_drop=2.0, time_limit="10m")


def search(model, out, budget=BUDGET, schedule=SCHEDULE, lines=None, **options):
    """``auto`` on digits with the small space, recovery and schedule above."""
    return auto(model, "digits", budget, out, recovery=RECOVERY, space=SPACE, schedule=schedule,
                calibration_samples=128, log=(lines.append if lines is not None else lambda line: None), **options)


@pytest.fixture(scope="session")
def searched(trained_mlp, tmp_path_factory):
    """``(OUT, result)`` of one search of the trained MLP."""
    out = tmp_path_factory.mktemp("auto")
    return out, search(trained_mlp, out)


@pytest.fixture(scope="session")
def checkpoint_file(trained_mlp, tmp_path_factory):
    """The trained MLP as a .safetensors checkpoint (its class: tests.models:UserMLP)."""
    from netshrink.train import save_model

    path = tmp_path_factory.mktemp("mlp") / "mlp.safetensors"
    save_model(path, trained_mlp)
    return path
