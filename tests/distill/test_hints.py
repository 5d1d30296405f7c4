"""FitNets hints: read through hooks (models not edited), projection trained by fit's optimizer."""

import pytest
import torch

from netshrink.core.errors import ConfigError
from netshrink.distillation import Distill, distill
from netshrink.distillation.hints import FeatureTap
from netshrink.train import FitConfig
from tests.models import TINY_MODELS

CONFIG = FitConfig(epochs=3, batch_size=32, lr=0.02)


def _hint_error(student, teacher, student_layer, teacher_layer, x):
    """Mean squared error of the best least-squares linear map from student to teacher features:
    how much of the teacher layer the student layer can express (no trained projection needed)."""
    taps = FeatureTap(student, student_layer, "s"), FeatureTap(teacher, teacher_layer, "t")
    with torch.no_grad():
        student.eval()(x)
        teacher.eval()(x)
    s, t = taps[0].take().flatten(1), taps[1].take().flatten(1)
    for tap in taps:
        tap.handle.remove()
    s = torch.cat([s, torch.ones(len(s), 1)], 1)
    solution = torch.linalg.lstsq(s, t).solution
    return float((s @ solution - t).pow(2).mean())


@pytest.mark.parametrize("name, layer", [("lenet300_100", "fc2"), ("user_mlp", "body.3"), ("transformer", "embed")])
def test_hint_pulls_the_student_layer_towards_the_teacher_layer(name, layer, teacher, digits):
    results = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        student = TINY_MODELS[name]()
        distill(student, teacher, digits, Distill(hint=(layer, "classifier.2"), hint_weight=weight), CONFIG,
                progress=False)
        results[weight] = _hint_error(student, teacher, layer, "classifier.2", digits.val.x)
        # hooks are gone and the student is the caller's module, unedited
        assert not student.get_submodule(layer)._forward_hooks
        assert not teacher.get_submodule("classifier.2")._forward_hooks
    assert results[1.0] < results[0.0]


def test_unknown_layer_is_refused(teacher, digits):
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="no layer 'nope'"):
        distill(TINY_MODELS["lenet5"](), teacher, digits, Distill(hint=("nope", "features.3")), CONFIG)


def test_sequence_first_layer_is_refused(teacher, digits):
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="batch first"):
        distill(TINY_MODELS["transformer"](), teacher, digits, Distill(hint=("encoder", "classifier.2")), CONFIG)


def test_hints_refuse_cache_and_ensembles(teacher, digits):
    with pytest.raises(ConfigError, match="single teacher"):
        distill(TINY_MODELS["lenet5"](), [teacher, teacher], digits, Distill(hint=("conv2", "features.3")), CONFIG)
