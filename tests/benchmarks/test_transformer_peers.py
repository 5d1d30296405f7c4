"""The Torch-Pruning peer of benchmarks/transformer_speed.py keeps exactly the heads and neurons it is
given, spread evenly, and leaves a BERT encoder that runs with its hidden size."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.append(str(Path(__file__).resolve().parents[2] / ".peers"))  # make peers: pip install --target .peers
pytest.importorskip("torch_pruning")
transformers = pytest.importorskip("transformers")

from benchmarks.transformers_peers import torch_pruning_heads_and_neurons  # noqa: E402


@pytest.mark.slow
def test_torch_pruning_keeps_the_given_totals_evenly_and_the_encoder_runs():
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=32,
        max_position_embeddings=16)).eval()
    ids = torch.randint(0, 50, (2, 12))
    sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    torch_pruning_heads_and_neurons(model, sample, heads_kept=7, neurons_kept=50)
    layers = model.encoder.layer
    assert [layer.attention.self.num_attention_heads for layer in layers] == [3, 2, 2]
    assert [layer.attention.self.query.out_features for layer in layers] == [24, 16, 16]
    assert [layer.intermediate.dense.out_features for layer in layers] == [17, 17, 16]
    with torch.no_grad():
        assert model(**sample).last_hidden_state.shape == (2, 12, 32)
