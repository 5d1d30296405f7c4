"""The transformers benchmark's protocol pieces: the topic split is disjoint and fixed, passages
have their fixed length, the retrieval figures are 1 for the reference itself and fall when the
neighbours change, and targets are computed from the measurements."""

import torch

from benchmarks import transformers as bench
from benchmarks import transformers_text as text


def test_the_topic_split_is_disjoint_covers_every_key_and_is_the_same_each_time():
    from pydoc_data.topics import topics

    parts = text.topic_parts()
    keys = [key for part in parts.values() for key in part]
    assert sorted(keys) == sorted(topics) and len(set(keys)) == len(keys)
    assert parts == text.topic_parts()


class _Characters:
    """A tokenizer stand-in: one id per character."""

    cls_token_id, sep_token_id = 1, 2

    def __call__(self, value, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in value]}


def test_passages_have_the_fixed_length_and_subsets_differ_by_seed():
    passages = text.encoder_passages(_Characters(), "".join(chr(48 + i) for i in range(100)), 12)
    assert passages["input_ids"].shape == (10, 12)
    assert bool((passages["input_ids"][:, 0] == 1).all() and (passages["input_ids"][:, -1] == 2).all())
    windows = text.decoder_windows(_Characters(), "x" * 100, 16, limit=3)
    assert windows.shape == (3, 16)
    first, second = text.subset(passages, 4, 0), text.subset(passages, 4, 1)
    assert first["input_ids"].shape == (4, 12) and not torch.equal(first["input_ids"], second["input_ids"])


def test_retrieval_is_one_for_the_reference_and_falls_when_neighbours_change():
    reference = torch.nn.functional.normalize(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    itself = bench.retrieval(reference, reference)
    assert abs(itself["cosine"] - 1) < 1e-6 and itself["recall_at_10"] == 1
    noisy = reference + 0.5 * torch.randn(40, 8, generator=torch.Generator().manual_seed(1))
    figures = bench.retrieval(reference, noisy)
    assert figures["cosine"] < 0.99 and figures["recall_at_10"] < 1


def test_targets_are_judged_from_the_measurements():
    row = {"evaluation": {"cosine": 0.9995, "recall_at_10": 1.0}, "file_bytes": 10, "ratio": 4.0}
    measurements = {"minilm": {"fp32": {"file_bytes": 40}, "int8_channel": {"0": row}}, "peers": {},
                    "smollm2": {"fp32": {"0": {"evaluation": 10.0}}, "gptq4_g64": {"0": {"evaluation": 12.0}},
                                "rtn4_g64": {"0": {"evaluation": 13.0}}}}
    found = {t["name"]: t for t in bench.targets(measurements, (0,))}
    assert found["MiniLM int8 per channel: cosine"]["met"]
    assert found["MiniLM int8 per channel: times smaller than fp32"]["met"]
    assert not found["SmolLM2 4-bit g64 GPTQ: perplexity over baseline"]["met"]  # 1.2 > 1.15
    assert not found["SmolLM2 4-bit g64 GPTQ: increase over round-to-nearest g64's"]["met"]  # 2/3 > 1/2
