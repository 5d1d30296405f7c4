"""Heads, MLP neurons and whole layers removed from the tiny Hugging Face models (tests/models.py
``HF_MODELS``: a BERT classifier and a Llama with grouped-query attention and tied embeddings)."""

import copy

import pytest
import torch

import netshrink
from netshrink.core import ConfigError, NetshrinkFormatError, get_log
from netshrink.core.model_io import call_model, output_tensor
from netshrink.core.rebuild import replay
from netshrink.prune.head_importance import _mask_hook
from netshrink.prune.layer_drop import LayerDrop
from netshrink.prune.transformer import TransformerPrune
from netshrink.prune.transformer_blocks import ATTENTION_KINDS, MLP_KINDS, attention_blocks, mlp_blocks
from netshrink.prune.verb import prune_
from tests.models import HF_MODELS, UserMLP, token_inputs
from tests.refusals import assert_refused_untouched

pytest.importorskip("transformers")

CALIBRATION = token_inputs(8, seed=1)


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return HF_MODELS[name]().eval()


def _outputs(model, x=None):
    with torch.no_grad():
        return output_tensor(call_model(model, token_inputs() if x is None else x))


def _kept_rows(original: torch.Tensor, pruned: torch.Tensor) -> list[int]:
    """Which rows of ``original`` the rows of ``pruned`` are."""
    return [int((original == row).all(1).nonzero()[0]) for row in pruned]


def _masked(original, pruned):
    """``original`` with every head and neuron ``pruned`` lacks zeroed at the O / down projection's input."""
    masked = copy.deepcopy(original)
    for block in attention_blocks(original):
        new = pruned.get_submodule(block.name)
        kept = get_log(pruned)[-1]["attention"].get(block.name, {}).get("kept", range(block.heads))
        mask = torch.zeros(block.heads)
        mask[list(kept)] = 1
        consumer = masked.get_submodule(block.name).get_submodule(ATTENTION_KINDS[block.kind][-1])
        consumer.register_forward_pre_hook(_mask_hook(mask, block.head_dim))
        assert new.get_submodule(ATTENTION_KINDS[block.kind][0]).out_features == len(kept) * block.head_dim
    for block in mlp_blocks(original):
        up = MLP_KINDS[block.kind][-2]
        kept = _kept_rows(original.get_submodule(f"{block.name}.{up}").weight,
                          pruned.get_submodule(f"{block.name}.{up}").weight)
        mask = torch.zeros(block.neurons)
        mask[kept] = 1
        masked.get_submodule(block.name).get_submodule(MLP_KINDS[block.kind][-1]).register_forward_pre_hook(
            _mask_hook(mask, 1))
    return masked


@pytest.mark.parametrize("importance", ["magnitude", "michel"])
@pytest.mark.parametrize(("name", "gqa"), [("bert", "per_group"), ("llama", "per_group"), ("llama", "groups")])
def test_the_pruned_model_computes_what_the_original_does_with_those_heads_and_neurons_masked(name, gqa, importance):
    original = _build(name)
    model = copy.deepcopy(original)
    prune_(model, TransformerPrune(heads=0.5, neurons=0.5, gqa=gqa, importance=importance,
                                   calibration_data=CALIBRATION))
    heads = [b.heads for b in attention_blocks(model)]
    assert heads == [b.heads // 2 for b in attention_blocks(original)]
    assert [b.neurons for b in mlp_blocks(model)] == [16, 16]
    torch.testing.assert_close(_outputs(model), _outputs(_masked(original, model)))
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in original.parameters())


def test_grouped_query_attention_keeps_equal_groups_and_generates_with_its_cache():
    per_group, groups = _build("llama"), _build("llama")
    prune_(per_group, TransformerPrune(heads={0: 2}, gqa="per_group"))
    prune_(groups, TransformerPrune(heads={1: 2}, gqa="groups"))
    first = per_group.model.layers[0].self_attn
    assert (first.num_key_value_groups, first.k_proj.out_features // first.head_dim) == (1, 2)
    second = groups.model.layers[1].self_attn
    assert (second.num_key_value_groups, second.k_proj.out_features // second.head_dim) == (2, 1)
    assert groups.model.layers[0].self_attn.q_proj.out_features == 16  # other layers untouched
    assert per_group.lm_head.weight is per_group.model.embed_tokens.weight  # tied embedding left whole
    for model in (per_group, groups):
        ids = token_inputs(1)["input_ids"][:, :4]
        cached = model.generate(ids, max_new_tokens=3, do_sample=False, use_cache=True)
        uncached = model.generate(ids, max_new_tokens=3, do_sample=False, use_cache=False)
        assert cached.shape == (1, 7) and torch.equal(cached, uncached)


@pytest.mark.parametrize("importance", ["magnitude", "michel", "fisher"])
def test_a_dead_head_and_a_dead_neuron_are_the_ones_removed(importance):
    model = _build("llama")
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    with torch.no_grad():
        attention.o_proj.weight[:, 12:16] = 0  # query head 3 (key-value group 1) adds nothing
        mlp.down_proj.weight[:, 5] = 0
    prune_(model, TransformerPrune(heads={0: 2}, neurons={0: 1}, importance=importance, calibration_data=CALIBRATION))
    assert 3 not in get_log(model)[-1]["attention"]["model.layers.0.self_attn"]["kept"]
    assert 2 in get_log(model)[-1]["attention"]["model.layers.0.self_attn"]["kept"]  # one head of each group stays
    assert mlp.down_proj.in_features == 31 and not (mlp.down_proj.weight == 0).all(0).any()


@pytest.mark.parametrize("importance", ["michel", "fisher"])
def test_an_encoder_without_logits_is_scored_on_its_features(importance):
    encoder = _build("bert").bert  # a BertModel: last_hidden_state out, no logits
    with torch.no_grad():
        encoder.encoder.layer[0].attention.output.dense.weight[:, :8] = 0  # head 0 adds nothing
    prune_(encoder, TransformerPrune(heads={0: 1, 1: 1}, importance=importance, calibration_data=CALIBRATION))
    assert get_log(encoder)[-1]["attention"]["encoder.layer.0.attention"]["kept"] == [1]


def test_rearrangement_removes_units_whose_gradients_cancel_rather_than_the_two_smallest():
    from netshrink.prune.mask_rearrange import rearranged_removal

    gradients = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.5, 0.0], [3.0, 1.0]])  # (units, samples)

    def cost(units):
        return float(gradients[list(units)].sum(0).pow(2).sum())

    removed = rearranged_removal(gradients, 2).tolist()
    assert len(removed) == 2 and 2 in removed
    assert cost(removed) < cost([0, 1])  # [0, 1]: the two lowest diagonal Fisher scores


@pytest.mark.parametrize(("name", "gqa"), [("bert", "per_group"), ("llama", "per_group"), ("llama", "groups")])
def test_a_rearranged_and_tuned_budget_saves_and_loads(name, gqa, tmp_path):
    model = _build(name)
    prune_(model, TransformerPrune(flops=0.5, gqa=gqa, importance="fisher", rearrange=True, tune=True,
                                   calibration_data=CALIBRATION))
    assert get_log(model)[-1]["flops_kept"] <= 0.5
    netshrink.save(model, tmp_path / "m.nsk")
    assert torch.equal(_outputs(netshrink.load(tmp_path / "m.nsk", model=_build(name)).eval()), _outputs(model))


def _multiply_adds(model, sequence: int) -> int:
    """Multiply-adds of the attention projections, attention itself and the MLPs, from the weights."""
    total = 0
    for block in attention_blocks(model):
        module = model.get_submodule(block.name)
        total += sum(module.get_submodule(p).weight.numel() for p in ATTENTION_KINDS[block.kind]) * sequence
        total += 2 * module.get_submodule(ATTENTION_KINDS[block.kind][0]).out_features * sequence ** 2
    for block in mlp_blocks(model):
        total += sum(model.get_submodule(block.name).get_submodule(p).weight.numel()
                     for p in MLP_KINDS[block.kind]) * sequence
    return total


@pytest.mark.parametrize("budget", [0.3, 0.6])
@pytest.mark.parametrize(("name", "gqa"), [("bert", "per_group"), ("llama", "per_group"), ("llama", "groups")])
def test_a_flops_budget_is_met_by_the_pruned_model(name, gqa, budget):
    model = _build(name)
    before = _multiply_adds(model, 8)
    prune_(model, TransformerPrune(flops=budget, gqa=gqa, importance="fisher", calibration_data=CALIBRATION))
    after = _multiply_adds(model, 8)
    largest_unit = 4 * 16 * 8 * 8 + 2 * 8 * 8 * 8 * 2  # two heads' projections and attention, sequence 8
    assert budget * before - largest_unit <= after <= budget * before
    assert get_log(model)[-1]["flops_kept"] == pytest.approx(after / before, abs=1e-3)
    ids = token_inputs(1)["input_ids"][:, :4]
    if name == "llama":
        assert model.generate(ids, max_new_tokens=2, do_sample=False, use_cache=True).shape == (1, 6)


@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_mask_tuning_brings_each_pruned_blocks_output_closer_to_the_originals(name, tmp_path):
    from netshrink.prune.mask_tuning import _capture, _consumer

    original = _build(name)
    plain, tuned, refit = copy.deepcopy(original), copy.deepcopy(original), copy.deepcopy(original)
    config = {"heads": 0.5, "neurons": 0.5, "calibration_data": CALIBRATION}
    prune_(plain, TransformerPrune(**config))
    prune_(tuned, TransformerPrune(**config, tune=True))
    prune_(refit, TransformerPrune(**config, tune="weights"))
    assert get_log(plain)[-1]["attention"] == get_log(tuned)[-1]["attention"]  # the same heads go
    mask = CALIBRATION["attention_mask"].reshape(-1).bool()
    for block in [attention_blocks(original)[0].name, mlp_blocks(original)[0].name]:
        want = _capture(original, _consumer(original, block)[0], CALIBRATION, 0, inputs=False).flatten(0, 1)[mask]
        errors = [float((_capture(m, _consumer(m, block)[0], CALIBRATION, 0, inputs=False).flatten(0, 1)[mask]
                         - want).pow(2).sum()) for m in (plain, tuned, refit)]
        assert errors[2] < errors[1] < errors[0]  # a whole weight refit fits better than one scale per unit
    for model in (tuned, refit):
        netshrink.save(model, tmp_path / "m.nsk")
        assert torch.equal(_outputs(netshrink.load(tmp_path / "m.nsk", model=_build(name)).eval()), _outputs(model))


@pytest.mark.parametrize("name", sorted(HF_MODELS))
def test_fewer_layers_heads_and_neurons_save_and_load_into_a_fresh_model(name, tmp_path):
    model = _build(name)
    prune_(model, LayerDrop(every_other=True))
    prune_(model, TransformerPrune(heads=0.5, neurons=0.25, importance="michel", calibration_data=CALIBRATION))
    assert model.config.num_hidden_layers == 1
    netshrink.save(model, tmp_path / "m.nsk")
    loaded = netshrink.load(tmp_path / "m.nsk", model=_build(name))
    assert torch.equal(_outputs(loaded.eval()), _outputs(model))
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in model.parameters())


def test_dropping_a_layer_renumbers_the_cache_slots_and_matches_skipping_it():
    original = _build("llama")
    model = copy.deepcopy(original)
    prune_(model, LayerDrop(layers=(0,)))
    assert model.config.num_hidden_layers == 1 and len(model.model.layers) == 1
    assert model.model.layers[0].self_attn.layer_idx == 0
    original.model.layers[0].forward = lambda hidden_states, *args, **kwargs: hidden_states  # skip layer 0
    torch.testing.assert_close(_outputs(model), _outputs(original))
    ids = token_inputs(1)["input_ids"][:, :4]
    assert model.generate(ids, max_new_tokens=2, do_sample=False, use_cache=True).shape == (1, 6)


@pytest.mark.parametrize(("name", "config", "message"), [
    ("llama", TransformerPrune(heads={0: 1}), r"heads\[0\]=1 does not divide"),
    ("llama", TransformerPrune(heads={0: 1}, gqa="groups"), r"heads\[0\]=1 does not divide"),
    ("llama", TransformerPrune(heads={0: 4}), "removes every head"),
    ("bert", TransformerPrune(heads={2: 1}), "names layer 2, but BertForSequenceClassification has 2"),
    ("bert", TransformerPrune(neurons={0: 32}), "removes every neuron"),
    ("llama", TransformerPrune(heads=0.2), "remove nothing"),
    ("bert", TransformerPrune(heads=0.5, importance="michel"), "needs calibration_data"),
    ("llama", TransformerPrune(flops=0.05), r"flops=0.05 cannot be reached: .* give at least"),
    ("llama", TransformerPrune(heads=0.5, tune=True), "tune=True needs calibration_data"),
    ("llama", TransformerPrune(heads=0.5, tune="weights"), "tune='weights' needs calibration_data"),
    ("bert", LayerDrop(layers=(0, 1)), "leaves 0"),
    ("llama", LayerDrop(layers=(5,)), "names layer 5"),
    ("mlp", TransformerPrune(heads=0.5), "no BERT- or Llama-style"),
    ("mlp", LayerDrop(every_other=True), "no stack of transformer layers"),
])
def test_bad_input_is_one_line_and_leaves_the_model_untouched(name, config, message):
    assert_refused_untouched(UserMLP() if name == "mlp" else _build(name), lambda model: prune_(model, config), message)


def test_bad_configs_are_one_line():
    for bad, message in [({"heads": 1.0}, r"heads must be a number in \[0, 1\)"), ({"neurons": {"x": 1}}, "keys"),
                         ({"heads": {0: -1}}, "integer >= 0"), ({"gqa": "some"}, "unknown gqa"),
                         ({"importance": "kwon"}, "unknown importance"), ({"flops": 1.0}, r"in \(0, 1\)"),
                         ({"flops": 0.5, "heads": 0.5}, "not both"),
                         ({"heads": 0.5, "rearrange": True}, "needs importance='fisher'"),
                         ({"heads": 0.5, "tune": "bias"}, "tune must be true, false or one of")]:
        with pytest.raises(ConfigError, match=message):
            TransformerPrune(**bad)
    for bad in ({}, {"layers": (1,), "every_other": True}, {"layers": (-1,)}):
        with pytest.raises(ConfigError, match="layers"):
            LayerDrop(**bad)
    assert TransformerPrune(heads={"0": 2}) == TransformerPrune(heads={0: 2})  # as a JSON record gives it back


@pytest.mark.parametrize(("name", "edit", "message"), [
    ("llama", lambda r: r["attention"]["model.layers.0.self_attn"].update(heads=5), "heads must be an integer"),
    ("llama", lambda r: r["attention"]["model.layers.0.self_attn"].update(heads=3), "do not divide"),
    ("llama", lambda r: r["attention"].update({"model.layers.0.mlp": {"heads": 2, "kv_heads": 2}}), "not a BERT"),
    ("llama", lambda r: r["mlp"].update({"model.layers.9.mlp": {"neurons": 2}}), "does not have"),
    ("bert", lambda r: r["mlp"]["bert.encoder.layer.0"].update(neurons=64), "neurons must be an integer"),
])
def test_a_record_the_handler_would_refuse_is_refused_on_load(name, edit, message):
    model = _build(name)
    prune_(model, TransformerPrune(heads={0: 2} if name == "llama" else 0.5, neurons=0.5))
    log = copy.deepcopy(get_log(model))
    edit(log[0])
    with pytest.raises(NetshrinkFormatError, match=message) as error:
        replay(_build(name), log)
    assert "\n" not in str(error.value)


def test_a_layer_drop_record_outside_the_stack_is_refused():
    model = _build("bert")
    prune_(model, LayerDrop(layers=(1,)))
    for kept, message in [([0, 2], "below 2"), ([1, 0], "increasing"), ([], "kept")]:
        log = copy.deepcopy(get_log(model))
        log[0]["kept"] = kept
        with pytest.raises(NetshrinkFormatError, match=message):
            replay(_build("bert"), log)
