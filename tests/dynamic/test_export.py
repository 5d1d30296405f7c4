"""Dynamic models exported to ONNX and run by ONNX Runtime: early exits leave by confidence inside the
graph (If nodes), slimmable models give one graph per width; every graph matches PyTorch; a failed
export is one line."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from netshrink.cli import main
from netshrink.codec.container import load, save
from netshrink.core.errors import NetshrinkError
from netshrink.dynamic import (
    EarlyExit,
    Slimmable,
    all_exit_logits,
    early_exit_,
    set_exit,
    set_thresholds,
    set_width,
    slimmable_,
)
from netshrink.dynamic.early_exit import confidence
from netshrink.quant.onnx_export import FP32_TOLERANCE, export_onnx, export_onnx_graphs, run_onnx
from tests.models import TINY_MODELS


def _two_exit_model(digits):
    """Tiny LeNet-300-100 with exits after fc1 and fc2 and a threshold some samples pass at each
    exit and some at neither (head weights scaled to spread the confidences)."""
    torch.manual_seed(0)
    model = early_exit_(TINY_MODELS["lenet300_100"](), EarlyExit(after=("fc1", "fc2"))).eval()
    with torch.no_grad():
        for head in model.exit_heads:
            head.weight.mul_(20)
    x = digits.val.x[:64]
    early = torch.stack([confidence(z, "max_softmax") for z in all_exit_logits(model, x)[:-1]]).detach()
    set_thresholds(model, float(early.quantile(0.5)))
    return model, x, early


def test_early_exits_leave_by_confidence_inside_the_onnx_graph(digits, tmp_path):
    model, x, early = _two_exit_model(digits)
    threshold = float(model.exit_thresholds[0])
    taken = torch.where(early[0] > threshold, 0, torch.where(early[1] > threshold, 1, 2))
    assert set(taken.tolist()) == {0, 1, 2}  # the batch mixes every exit
    path = tmp_path / "exits.onnx"
    (written, point, difference), = export_onnx_graphs(model, path, x)
    assert written == path and "leaving by confidence" in point and difference <= FP32_TOLERANCE
    assert sum(node.op_type == "If" for node in onnx.load(str(path)).graph.node) == 1  # nested: exit 1 inside
    with torch.no_grad():
        expected = model(x).numpy()
        assert np.abs(run_onnx(path, x) - expected).max() <= FP32_TOLERANCE
        for k in (0, 1, 2):  # batch 1, where the later stages are really skipped
            i = int((taken == k).nonzero()[0])
            assert np.abs(run_onnx(path, x[i:i + 1]) - model(x[i:i + 1]).numpy()).max() <= FP32_TOLERANCE


@pytest.mark.slow
def test_a_fixed_exit_exports_its_path_and_a_saved_file_exports_through_the_cli(digits, tmp_path, capsys):
    model, x, _ = _two_exit_model(digits)
    set_exit(model, 0)
    (_, point, _), = export_onnx_graphs(model, tmp_path / "fixed.onnx", x)
    assert point == "fixed exit 0 of 3"
    with torch.no_grad():
        assert np.abs(run_onnx(tmp_path / "fixed.onnx", x) - model(x).numpy()).max() <= FP32_TOLERANCE
    set_thresholds(model, float(model.exit_thresholds[0]))
    save(model, tmp_path / "m.nsk")
    assert main(["export", str(tmp_path / "m.nsk"), "--onnx", str(tmp_path / "m.onnx"), "--data", "digits"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 1 and "m.onnx: leaving by confidence" in out
    loaded = load(tmp_path / "m.nsk")
    with torch.no_grad():
        assert np.abs(run_onnx(tmp_path / "m.onnx", x) - loaded(x).numpy()).max() <= FP32_TOLERANCE


@pytest.mark.slow
def test_a_slimmable_model_exports_one_checked_graph_per_width(digits, tmp_path):
    torch.manual_seed(0)
    model = slimmable_(TINY_MODELS["convnet"](), Slimmable(widths=(0.5, 1.0))).eval()
    x = digits.val.x[:32]
    graphs = export_onnx_graphs(model, tmp_path / "slim.onnx", x)
    assert [(p.name, point) for p, point, _ in graphs] == [("slim.onnx", "width 1"),
                                                            ("slim.width-0.5.onnx", "width 0.5")]
    assert all(difference <= FP32_TOLERANCE for _, _, difference in graphs)
    outputs = {}
    for width, path in ((1.0, tmp_path / "slim.onnx"), (0.5, tmp_path / "slim.width-0.5.onnx")):
        set_width(model, width)
        with torch.no_grad():
            outputs[width] = run_onnx(path, x)
            assert np.abs(outputs[width] - model(x).numpy()).max() <= FP32_TOLERANCE
    assert np.abs(outputs[1.0] - outputs[0.5]).max() > 1e-3  # two different graphs


class _BranchesOnValues(nn.Module):
    """A forward torch.export cannot capture: Python control flow on a tensor's value."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.flatten(1))
        return y if float(y.sum()) > 0 else -y


def test_a_failed_export_is_one_plain_line_and_writes_nothing(digits, tmp_path):
    with pytest.raises(NetshrinkError, match=r"^ONNX export of _BranchesOnValues failed: torch.export could not "
                                             r"capture its forward \(") as info:
        export_onnx(_BranchesOnValues().eval(), tmp_path / "m.onnx", digits.val.x[:4])
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 300
    assert list(tmp_path.iterdir()) == []
