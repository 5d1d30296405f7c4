"""``core.model_io``: a batch is a tensor, a tuple or a dict of keyword inputs; the main output is
read from a tensor, a tuple or a mapping (a Hugging Face ``ModelOutput``)."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from netshrink.core.model_io import batch_length, call_model, map_tensors, output_tensor


class _Keywords(nn.Module):
    def forward(self, input_ids, attention_mask=None, scale=1.0):
        return OrderedDict(hidden=input_ids.float() * 0, logits=input_ids.float() * scale * attention_mask)


def test_a_dict_batch_is_passed_by_keyword_and_a_mapping_output_gives_its_logits():
    ids, mask = torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 0], [1, 1]])
    out = output_tensor(call_model(_Keywords(), {"input_ids": ids, "attention_mask": mask, "scale": 2.0}))
    assert torch.equal(out, torch.tensor([[2.0, 0.0], [6.0, 8.0]]))


def test_tuples_are_positional_and_a_tuple_output_gives_its_first_tensor():
    model = nn.Bilinear(2, 3, 1)
    a, b = torch.randn(4, 2), torch.randn(4, 3)
    assert torch.equal(call_model(model, (a, b)), model(a, b))
    assert output_tensor((None, b, 1)) is b and output_tensor((a, b)) is a
    assert output_tensor(OrderedDict(first=None, last_hidden_state=a)) is a
    with pytest.raises(TypeError, match="holds no tensor"):
        output_tensor((None, 1))


def test_map_tensors_walks_nested_batches_and_batch_length_reads_the_first_tensor():
    batch = {"ids": torch.zeros(5, 3), "extra": (torch.ones(5), "name")}
    halves = map_tensors(batch, lambda t: t[:2])
    assert halves["ids"].shape == (2, 3) and halves["extra"][0].shape == (2,) and halves["extra"][1] == "name"
    assert batch_length(batch) == 5 and batch_length(torch.zeros(7, 2)) == 7
