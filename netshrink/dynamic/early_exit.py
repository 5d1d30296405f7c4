"""Early exits (BranchyNet, Teerapittayanon et al. 2016): classifier heads after chosen blocks.

``early_exit_(model, EarlyExit(after=("features.2",)))`` adds one small head per named block
(``model.exit_heads``), a buffer of per-exit confidence thresholds (``model.exit_thresholds``) and a
buffer choosing a fixed exit (``model.exit_fixed``, -1 = leave by confidence). The model is then
cut into stages at those blocks (``stages.py``) and its ``forward`` dispatches:

- training: every stage and every head runs; the model returns the last exit's logits and keeps
  the early exits' logits for ``exit_loss`` (the joint loss of BranchyNet sec. III-B);
- ``exit_fixed = k``: stages ``0..k`` and head ``k`` only, a hard budget (``k`` = number of early
  exits runs the whole network);
- otherwise: inference by difficulty (BranchyNet sec. III-C): a sample leaves at the first exit
  whose confidence (max softmax, or 1 - normalised entropy) exceeds that exit's threshold, and is
  dropped from the batch before the next stage runs. With every threshold at 1 (the default) no
  sample leaves early and the original forward runs unchanged.

The heads are a structural change: the log record holds each exit's block and per-sample feature
shape, and the rebuilder makes the same heads on a fresh model, so ``.nsk`` files keep their exits;
thresholds and the fixed exit are buffers, saved with the weights.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from netshrink.core import record_checks
from netshrink.core.config import Config
from netshrink.core.errors import ConfigError, NetshrinkFormatError, one_line
from netshrink.core.registry import apply_, register
from netshrink.core.transform_log import get_arch
from netshrink.dynamic.stages import batch_first_shapes, cached_stages
from netshrink.dynamic.training import EXITS

HEADS = ("linear", "conv", "pooled_conv")
CRITERIA = ("max_softmax", "entropy")
SPEC_ATTR = "netshrink_exits"
EXIT_LOGITS_ATTR = "netshrink_exit_logits"


@dataclasses.dataclass(frozen=True)
class EarlyExit(Config):
    """Exits after named blocks.

    Args:
        after: qualified names of the blocks (``model.named_modules()`` names) after which an exit
            is added, in forward order.
        head: ``"linear"``: (average pool to ``pool`` x ``pool`` for conv features, mean over
            tokens for (T, D) features) then one Linear; ``"conv"``: a 3x3 stride-2 conv with
            ``head_channels``, BatchNorm and ReLU first (BranchyNet's conv branches);
            ``"pooled_conv"``: the same conv on the features average-pooled to ``2 * pool`` x
            ``2 * pool`` first, so an exit on a large early feature map costs a fraction of the
            block it follows (the cheap exits BranchyNet sec. IV needs for a CPU speed-up).
        head_channels: width of the ``"conv"`` and ``"pooled_conv"`` heads.
        pool: side of the pooled grid for conv features.
        criterion: confidence of an exit: ``"max_softmax"`` or ``"entropy"`` (1 - H(p) / log C).
        input_shape: one sample's shape, to size the heads; empty for zoo models (their own).

    Example:
        >>> early_exit_(create("convnet"), EarlyExit(after=("features.2",), pool=4))
    """

    LAYER_FIELDS = ("after",)

    after: tuple[str, ...] = ()
    head: str = "linear"
    head_channels: int = 32
    pool: int = 1
    criterion: str = "max_softmax"
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.after or not all(isinstance(b, str) and b for b in self.after):
            raise ConfigError(f"EarlyExit.after must name at least one block, got {list(self.after)}")
        if len(set(self.after)) != len(self.after):
            raise ConfigError(f"EarlyExit.after names a block twice: {list(self.after)}")
        if self.head not in HEADS:
            raise ConfigError(f"unknown exit head {self.head!r}; choose one of {list(HEADS)}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"unknown exit criterion {self.criterion!r}; choose one of {list(CRITERIA)}")
        for name in ("head_channels", "pool"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"EarlyExit.{name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ExitSpec:
    """What the dispatching forward needs: the blocks cut after and the confidence criterion."""

    blocks: tuple[str, ...]
    criterion: str


class TokenMean(nn.Module):
    """(B, T, D) -> (B, D): the mean over tokens, so a Linear head can read token features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def make_head(shape: Sequence[int], num_classes: int, config: EarlyExit) -> nn.Module:
    """The exit classifier for per-sample features of ``shape``: (F,), (T, D) or (C, H, W)."""
    if len(shape) == 1:
        return nn.Linear(shape[0], num_classes)
    if len(shape) == 2:
        return nn.Sequential(TokenMean(), nn.Linear(shape[1], num_classes))
    if len(shape) != 3:
        raise ConfigError(f"exit heads read features of shape (F,), (T, D) or (C, H, W), got {tuple(shape)}")
    channels = shape[0]
    layers: list[nn.Module] = []
    if config.head == "pooled_conv":
        layers.append(nn.AdaptiveAvgPool2d(2 * config.pool))
    if config.head in ("conv", "pooled_conv"):
        layers += [nn.Conv2d(channels, config.head_channels, 3, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(config.head_channels), nn.ReLU(inplace=True)]
        channels = config.head_channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(config.pool), nn.Flatten(),
                         nn.Linear(channels * config.pool * config.pool, num_classes))


def exit_spec(model: nn.Module) -> ExitSpec:
    """The model's exits; a one-line ConfigError for a model without any."""
    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        raise ConfigError(f"{type(model).__name__} has no early exits; add them with early_exit_(model, "
                          "EarlyExit(after=[...]))")
    return spec


def num_exits(model: nn.Module) -> int:
    """Exits including the last (the network's own output)."""
    return len(exit_spec(model).blocks) + 1


def confidence(logits: torch.Tensor, criterion: str) -> torch.Tensor:
    """Per-sample confidence in [0, 1]: max softmax, or 1 - entropy / log(classes) (BranchyNet
    sec. III-C uses the entropy)."""
    probabilities = F.softmax(logits.float(), dim=-1)
    if criterion == "max_softmax":
        return probabilities.max(dim=-1).values
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=-1)
    return 1.0 - entropy / math.log(logits.shape[-1])


def all_exit_logits(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every exit's logits for every sample of ``x`` (no sample dropped), the last exit last."""
    spec = exit_spec(model)
    stages = cached_stages(model, spec.blocks)
    outputs = []
    for stage, head in zip(stages, model.exit_heads, strict=False):
        x = stage(x)
        outputs.append(head(x))
    outputs.append(stages[-1](x))
    return outputs


def _by_difficulty(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Each sample's logits from the first exit it passes; samples that left are dropped from
    the batch before the next stage (the work is really skipped)."""
    spec = exit_spec(model)
    stages = cached_stages(model, spec.blocks)
    thresholds = model.exit_thresholds.tolist()
    if x.shape[0] == 1:  # one input at a time (a phone): no batch bookkeeping, which cost ~25% there
        for stage, head, threshold in zip(stages, model.exit_heads, thresholds, strict=False):
            x = stage(x)
            logits = head(x)
            if bool(confidence(logits, spec.criterion) > threshold):
                return logits
        return stages[-1](x)
    out: torch.Tensor | None = None
    index = torch.arange(x.shape[0], device=x.device)  # original position of each remaining sample
    for stage, head, threshold in zip(stages, model.exit_heads, thresholds, strict=False):
        x = stage(x)
        logits = head(x)
        if out is None:
            out = logits.new_empty(index.numel(), logits.shape[-1])
        leave = confidence(logits, spec.criterion) > threshold
        out[index[leave]] = logits[leave]
        stay = ~leave
        x, index = x[stay], index[stay]
        if index.numel() == 0:
            return out
    out[index] = stages[-1](x)
    return out


def _fixed(model: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    stages = cached_stages(model, exit_spec(model).blocks)
    for stage in stages[:k + 1]:
        x = stage(x)
    return model.exit_heads[k](x)


def _dispatching_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The forward of a model with exits (see the module docstring)."""
    if model.training:
        logits = all_exit_logits(model, x)
        object.__setattr__(model, EXIT_LOGITS_ATTR, logits[:-1])
        return logits[-1]
    fixed = int(model.exit_fixed)
    if 0 <= fixed < len(model.exit_heads):
        return _fixed(model, x, fixed)
    if not leaves_by_confidence(model):
        return type(model).forward(model, x)
    return _by_difficulty(model, x)


def _install(model: nn.Module, record: dict[str, Any]) -> None:
    """Add the heads, buffers and dispatching forward a record describes (handler and rebuilder)."""
    config = EarlyExit.from_dict(record["config"])
    heads = [make_head(shape, record["num_classes"], config) for shape in record["shapes"]]
    model.exit_heads = nn.ModuleList(heads)
    model.register_buffer("exit_thresholds", torch.ones(len(heads)))
    model.register_buffer("exit_fixed", torch.tensor(-1))
    object.__setattr__(model, SPEC_ATTR, ExitSpec(tuple(config.after), config.criterion))
    model.forward = types.MethodType(_dispatching_forward, model)


def _rebuild(model: nn.Module, record: dict[str, Any]) -> None:
    _install(model, record)


def _builder_defaults(name: str | None) -> dict[str, Any]:
    """The default kwargs of zoo builder ``name`` (those ``create`` was not given); {} for none."""
    from netshrink.models.registry import _MODELS  # the zoo exposes argument names only

    builder = _MODELS.get(name) if name is not None else None
    if builder is None:
        return {}
    return {key: p.default for key, p in inspect.signature(builder).parameters.items()
            if p.default is not inspect.Parameter.empty}


def sample_shape(model: nn.Module, given: Sequence[int]) -> tuple[int, ...]:
    """One input sample's shape: ``given``, else the zoo architecture's ``input_shape`` or
    ``in_features``; a one-line ConfigError when neither is known."""
    if given:
        return tuple(int(v) for v in given)
    arch = get_arch(model) or {"name": None, "kwargs": {}}
    kwargs = {**_builder_defaults(arch["name"]), **arch["kwargs"]}
    if "input_shape" in kwargs:
        return tuple(int(v) for v in kwargs["input_shape"])
    if "in_features" in kwargs:
        return (int(kwargs["in_features"]),)
    raise ConfigError(f"{type(model).__name__} is not a zoo model; give its input_shape (one sample's shape)")


def early_exit_(model: nn.Module, config: EarlyExit) -> nn.Module:
    """Add exits after ``config.after``'s blocks, in place (logged); returns the model."""
    return apply_(model, config)


#: bounds of a logged exit head's input: dimensions per sample, and each dimension's size
_HEAD_INPUT_DIMS, _HEAD_INPUT_SIZE = 3, 2 ** 16


def _check(model: nn.Module, record: dict[str, Any]) -> None:
    """One set of exits per model and none on a slimmable one (as the handler refuses); one head
    input shape per block named, each (F,), (T, D) or (C, H, W); and the heads follow from the
    model's shapes: the logged head inputs and class count are those the handler measures, probed
    here on a ``meta`` copy of the model (no memory), so a record cannot size a head at will."""
    record_checks.not_yet(model, SPEC_ATTR, "early_exit")
    record_checks.not_yet(model, "netshrink_widths", "early_exit on a slimmable model")
    config = EarlyExit.from_dict(record["config"])
    record_checks.layers(model, list(config.after))
    shapes = record.get("shapes")
    if not isinstance(shapes, list) or len(shapes) != len(config.after):
        raise NetshrinkFormatError(f"needs one head input shape per block in 'after' ({len(config.after)})")
    for shape in shapes:
        if not isinstance(shape, list) or not 1 <= len(shape) <= _HEAD_INPUT_DIMS:
            raise NetshrinkFormatError(f"a head input shape has 1 to {_HEAD_INPUT_DIMS} dimensions")
        for size in shape:
            record_checks.size(size, _HEAD_INPUT_SIZE, "a head input dimension")
    record_checks.size(record.get("num_classes"), _HEAD_INPUT_SIZE, "num_classes")
    measured, num_classes = _probed_shapes(model, config)
    if shapes != measured or record["num_classes"] != num_classes:
        raise NetshrinkFormatError(f"exit heads must follow from the model's shapes: heads read {measured} "
                                   f"into {num_classes} classes, the record logs {str(shapes)[:80]} into "
                                   f"{record['num_classes']}")


def _probed_shapes(model: nn.Module, config: EarlyExit) -> tuple[list[list[int]], int]:
    """The head input shapes and class count the handler would log for ``config``, measured on a
    ``meta`` copy of ``model`` (the model itself when it is on ``meta`` already)."""
    from netshrink.core.rebuild import meta_shadow  # rebuild imports the registry this module uses

    try:
        on_meta = all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
        probe = model if on_meta else meta_shadow(model)
        if probe is None:
            raise NetshrinkFormatError("the model cannot be copied to the meta device to check its exits")
        input_shape = sample_shape(probe, config.input_shape)
        meta = torch.device("meta")
        was_training = probe.training
        probe.eval()
        try:
            shapes = batch_first_shapes(cached_stages(probe, config.after), input_shape, meta)
            with torch.no_grad():
                num_classes = int(probe(torch.zeros(3, *input_shape, device=meta)).shape[-1])
        finally:
            probe.train(was_training)
    except NetshrinkFormatError:
        raise
    except Exception as error:  # noqa: BLE001 (a model from a file that does not run)
        raise NetshrinkFormatError(f"cannot measure the exit heads' inputs on the model ({one_line(error)})") from None
    return [list(shape) for shape in shapes], num_classes


@register(EarlyExit, "early_exit", rebuild=_rebuild, check=_check, structural=True, training=EXITS,
          verb=early_exit_)
def _early_exit(model: nn.Module, config: EarlyExit) -> dict[str, Any]:
    if getattr(model, SPEC_ATTR, None) is not None or hasattr(model, "exit_heads"):
        raise ConfigError(f"{type(model).__name__} already has early exits; add all exits in one EarlyExit")
    if getattr(model, "netshrink_widths", None) is not None:
        raise ConfigError("this model is slimmable; early exits and slimmable widths do not combine yet")
    modules = dict(model.named_modules())
    unknown = [block for block in config.after if block not in modules or not block]
    if unknown:
        raise ConfigError(f"no block named {unknown[0]!r} in {type(model).__name__}; exit after one of "
                          f"{[name for name in modules if name][:12]}")
    input_shape = sample_shape(model, config.input_shape)
    device = next(model.parameters()).device
    stages = cached_stages(model, config.after)
    was_training = model.training
    model.eval()
    try:
        shapes = batch_first_shapes(stages, input_shape, device)
        with torch.no_grad():
            num_classes = int(model(torch.zeros(3, *input_shape, device=device)).shape[-1])
    finally:
        model.train(was_training)
    record = {"config": config.to_dict(), "shapes": [list(s) for s in shapes], "num_classes": num_classes}
    _install(model, record)
    model.exit_heads.to(device)
    model.exit_thresholds = model.exit_thresholds.to(device)
    model.exit_fixed = model.exit_fixed.to(device)
    return {"shapes": record["shapes"], "num_classes": num_classes}


def leaves_by_confidence(model: nn.Module) -> bool:
    """Whether the model's cost depends on its input: no fixed exit and a threshold below 1."""
    return int(model.exit_fixed) < 0 and not bool((model.exit_thresholds >= 1.0).all())


def set_exit(model: nn.Module, k: int | None) -> None:
    """Always leave at exit ``k`` (0-based; ``num_exits - 1`` is the whole network), or with
    ``None`` leave by confidence."""
    last = num_exits(model) - 1
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= last):
        raise ConfigError(f"exit must be an integer in [0, {last}] (or None: leave by confidence), got {k!r}")
    model.exit_fixed.fill_(-1 if k is None else k)


def check_threshold(value: float, what: str = "threshold") -> float:
    """``value`` as a float in [0, 1], else a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{what} must be in [0, 1] (confidence an exit needs to let a sample leave), got {value!r}")
    return float(value)


def set_thresholds(model: nn.Module, thresholds: float | Sequence[float]) -> None:
    """Set every early exit's threshold (one number for all, or one per early exit), and leave by
    confidence. 1 keeps every sample to the end; 0 lets nearly all leave at the first exit."""
    count = num_exits(model) - 1
    values = [thresholds] * count if isinstance(thresholds, (int, float)) else list(thresholds)
    if len(values) != count:
        raise ConfigError(f"give one threshold or {count} (one per early exit), got {len(values)}")
    checked = [check_threshold(v) for v in values]
    model.exit_thresholds.copy_(torch.tensor(checked, dtype=model.exit_thresholds.dtype))
    set_exit(model, None)


def exit_loss(model: nn.Module, weights: Sequence[float] | None = None, distill: float = 0.0,
              temperature: float = 1.0, label_smoothing: float = 0.0):
    """The ``fit`` loss of joint training: ``sum_k w_k * loss_k`` over all exits (BranchyNet
    sec. III-B). With ``distill`` > 0 each early exit's loss is ``distill * T^2 * KL(last exit ||
    exit) + (1 - distill) * CE`` (Hinton et al. 2015 sec. 2; the last exit as teacher, detached).
    ``weights`` default to 1 per exit, the last one last.

    Example:
        >>> fit(model, data, FitConfig(epochs=10), loss_fn=exit_loss(model, weights=(0.5, 1.0)))
    """
    from netshrink.distillation.loss import distillation_loss

    count = num_exits(model)
    weights = [1.0] * count if weights is None else [float(w) for w in weights]
    if len(weights) != count or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ConfigError(f"give {count} exit weights >= 0 (one per exit, the last one last), got {weights}")
    if not 0.0 <= distill <= 1.0 or temperature <= 0:
        raise ConfigError(f"distill must be in [0, 1] and temperature > 0, got {distill} and {temperature}")

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        early = getattr(model, EXIT_LOGITS_ATTR, None)
        if not early:
            raise ConfigError("exit_loss needs the model's training-mode forward of this step; pass it the model "
                              "that fit trains")
        object.__setattr__(model, EXIT_LOGITS_ATTR, None)
        total = weights[-1] * F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        teacher = F.softmax(logits.detach().float() / temperature, dim=-1)
        for weight, exit_logits in zip(weights[:-1], early, strict=True):
            if distill > 0:
                term = distillation_loss(exit_logits, teacher, y, temperature, distill)
            else:
                term = F.cross_entropy(exit_logits, y, label_smoothing=label_smoothing)
            total = total + weight * term
        return total

    return loss_fn
