"""The text of the transformers benchmark: CPython's documentation topics split by topic key, and
the standard library's docstrings as out-of-domain text, cut into passages of fixed token length.

- In domain: ``pydoc_data.topics.topics`` (topic key -> text). The keys, sorted, are shuffled once
  with ``SPLIT_SEED`` and cut into calibration / validation / evaluation parts (``SPLIT``), so that a
  topic's near-duplicate passages never fall into two parts.
- Out of domain: the docstrings of ``OOD_MODULES`` (each module's, then each public class's and
  function's, as ``pydoc`` shows them through ``inspect.getdoc``), in that order.

Passages are consecutive token ids of one part's text joined (``tokenizer(text)`` without special
tokens), cut into windows of a fixed length; an encoder's passage is wrapped in its ``[CLS]`` and
``[SEP]`` tokens.
"""

from __future__ import annotations

import importlib
import inspect
import random

import torch

SPLIT_SEED = 0
SPLIT = {"calibration": 0.5, "validation": 0.2, "evaluation": 0.3}
OOD_MODULES = ("argparse", "asyncio", "bisect", "calendar", "collections", "contextlib", "csv", "dataclasses",
               "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "heapq", "inspect",
               "itertools", "json", "logging", "math", "pathlib", "pickle", "random", "re", "shutil", "socket",
               "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "typing",
               "unittest", "uuid", "zipfile")


def topic_parts() -> dict[str, list[str]]:
    """``{part: topic keys}``, disjoint, from one shuffle of the sorted keys."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    random.Random(SPLIT_SEED).shuffle(keys)
    parts, start = {}, 0
    for index, (part, share) in enumerate(SPLIT.items()):
        end = len(keys) if index == len(SPLIT) - 1 else start + round(share * len(keys))
        parts[part] = keys[start:end]
        start = end
    return parts


def topic_text(keys: list[str]) -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in keys)


def docstring_text() -> str:
    """The out-of-domain text: the docstrings of ``OOD_MODULES`` and their public members."""
    docs = []
    for name in OOD_MODULES:
        module = importlib.import_module(name)
        docs.append(inspect.getdoc(module) or "")
        for member, value in sorted(vars(module).items()):
            if not member.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value)) \
                    and getattr(value, "__module__", None) == name:
                docs.append(inspect.getdoc(value) or "")
    return "\n\n".join(doc for doc in docs if doc)


def token_ids(tokenizer, text: str) -> torch.Tensor:
    """The text's token ids, no special tokens, as one long 1-D tensor."""
    import transformers

    transformers.logging.set_verbosity_error()  # "sequence longer than the model's maximum": we cut it
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def encoder_passages(tokenizer, text: str, length: int, limit: int | None = None) -> dict[str, torch.Tensor]:
    """``{"input_ids", "attention_mask"}`` ``(N, length)``: ``[CLS] + length - 2 ids + [SEP]`` each."""
    ids = token_ids(tokenizer, text)
    body = length - 2
    count = len(ids) // body if limit is None else min(limit, len(ids) // body)
    windows = ids[:count * body].reshape(count, body)
    cls = torch.full((count, 1), tokenizer.cls_token_id)
    sep = torch.full((count, 1), tokenizer.sep_token_id)
    input_ids = torch.cat([cls, windows, sep], dim=1)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def decoder_windows(tokenizer, text: str, length: int, limit: int | None = None) -> torch.Tensor:
    """``(N, length)`` consecutive windows of the text's token ids."""
    ids = token_ids(tokenizer, text)
    count = len(ids) // length if limit is None else min(limit, len(ids) // length)
    return ids[:count * length].reshape(count, length)


def subset(data, count: int, seed: int):
    """``count`` passages drawn without replacement with ``seed`` (a calibration subset)."""
    total = (data["input_ids"] if isinstance(data, dict) else data).shape[0]
    index = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]
    return {k: v[index] for k, v in data.items()} if isinstance(data, dict) else data[index]
