"""``calibration.batches``: calibration data as tensors, dicts of tensors, lists, Datasets and
DataLoaders, and one-line errors for data that is empty, malformed or does not fit the model."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from netshrink.calibration.batches import calibration_batches, run_calibration
from netshrink.core.errors import ConfigError
from tests.models import HF_MODELS, VOCAB, UserMLP, token_inputs


def _ids(batches) -> torch.Tensor:
    return torch.cat([b["input_ids"] if isinstance(b, dict) else b for b in batches])


def test_a_tensor_and_a_dict_are_cut_into_batches_keeping_every_sample_in_order():
    x = torch.arange(10.0).reshape(10, 1)
    batches = calibration_batches(x, batch_size=4)
    assert [len(b) for b in batches] == [4, 4, 2] and torch.equal(torch.cat(batches), x)
    tokens = token_inputs(5)
    batches = calibration_batches(tokens, batch_size=2)
    assert [set(b) for b in batches] == [{"input_ids", "attention_mask"}] * 3
    assert torch.equal(_ids(batches), tokens["input_ids"])
    assert torch.equal(torch.cat([b["attention_mask"] for b in batches]), tokens["attention_mask"])


def test_lists_datasets_and_dataloaders_give_their_inputs_without_labels(digits):
    x, y = digits.val.x[:10], digits.val.y[:10]
    listed = calibration_batches([x[:3], x[3:]])
    assert [len(b) for b in listed] == [3, 7]
    from_pairs = calibration_batches(TensorDataset(x, y), batch_size=4)
    assert [len(b) for b in from_pairs] == [4, 4, 2] and torch.equal(torch.cat(from_pairs), x)
    from_loader = calibration_batches(DataLoader(TensorDataset(x, y), batch_size=5))
    assert torch.equal(torch.cat(from_loader), x)
    assert torch.equal(torch.cat(calibration_batches(digits.val, batch_size=100)), digits.val.x)
    dicts = [token_inputs(2, seed=s) for s in range(3)]
    assert torch.equal(_ids(calibration_batches(dicts)), _ids(dicts))


@pytest.mark.parametrize("data,message", [
    ([], "is empty"),
    (torch.tensor(3.0), "single number"),
    ({"input_ids": torch.zeros(4, 3), "attention_mask": torch.zeros(5, 3)}, "share their first"),
    (["text"], "holding no tensor"),
    ("calibration.txt", "must be a tensor"),
])
def test_malformed_data_is_one_line(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        calibration_batches(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["images_to_bert", "ids_beyond_vocabulary", "tokens_to_mlp", "wrong_width"])
def test_data_that_does_not_fit_the_model_is_one_line(case):
    pytest.importorskip("transformers")
    model, batch = {
        "images_to_bert": (HF_MODELS["bert"](), torch.randn(2, 1, 8, 8)),
        "ids_beyond_vocabulary": (HF_MODELS["llama"](), {"input_ids": torch.full((2, 4), VOCAB + 3)}),
        "tokens_to_mlp": (UserMLP(), token_inputs(2)),
        "wrong_width": (UserMLP(), torch.randn(2, 1, 7, 7)),
    }[case]
    with pytest.raises(ConfigError, match="calibration batch 0 does not fit") as info:
        run_calibration(model, batch, 0)
    assert "\n" not in str(info.value)
