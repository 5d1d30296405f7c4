"""The transformer speed benchmark's SmolLM2-135M rows in ONNX Runtime GenAI: the decoder exported
with its KV cache (``quant.onnx_decoder``, onnxruntime-genai's model builder) in fp32 and in int4,
from the fp32 weights ``transformers`` dequantizes from the packaged GGUF file. int4: our GPTQ
(``GPTQ_CONFIG``: the post-training benchmark's 4-bit setting, calibrated on its calibration subset
0, ``CALIBRATION`` windows) in the projections' ``MatMulNBits`` blocks; the tied output layer and
word embeddings: the builder's round-to-nearest blocks of the same size (GPTQ leaves a tied output
layer alone).

- Fidelity: perplexity of PyTorch and of each ONNX file on the post-training benchmark's evaluation
  windows (``benchmarks/transformers_text.py``: the topics' evaluation part, ``WINDOWS`` windows of
  ``WINDOW`` tokens); the fp32 file is also checked against PyTorch at export.
- Next-token latency at batch 1 after a ``CONTEXT``-token context: one generator per file holds the
  context in its cache; a timed call makes ``TOKENS`` greedy decoding steps
  (``generate_next_token``), then rewinds to the context. Median of ``ROUNDS`` interleaved calls
  (fp32, int4, fp32, ...) in this one process, on 1 thread and on 2, divided by ``TOKENS``.
- Peak RSS: each file loaded, the context appended and ``TOKENS`` tokens generated in a process of
  its own (1 thread), that process's ``VmHWM`` (the Python interpreter and ONNX Runtime included, as
  a user's server would be; not ``ru_maxrss``, which Linux carries over from the forking parent).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import target
from netshrink.measure.latency import interleaved_ms

CONTEXT = 256
TOKENS = 16
ROUNDS = 9
THREADS = (1, 2)
WINDOW = 512
WINDOWS = 6
PRECISIONS = ("fp32", "int4")
CALIBRATION = 16
#: benchmarks/transformers.py's gptq4_g64 (group 64 divides SmolLM2's 576 inputs; chosen there on validation)
GPTQ_CONFIG = {"bits": 4, "group_size": 64, "act_order": True, "calibration": "mse", "asymmetric": True,
               "batch_size": 4}
CONTENTION = ["The fp32 decoder ran slower on 2 threads than on 1: the 2 cores were shared with other jobs during "
              "this run, so its 2-thread figures measure the contention more than the model.", ""]
RSS_SCRIPT = """
import sys, numpy as np, onnxruntime_genai as og
model = og.Model(sys.argv[1])
params = og.GeneratorParams(model)
params.set_search_options(max_length={context} + {tokens}, do_sample=False)
generator = og.Generator(model, params)
generator.append_tokens(np.array([int(t) for t in sys.argv[2].split(",")], np.int32))
for _ in range({tokens}):
    generator.generate_next_token()
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def decoder_stage(folder: Path) -> dict:
    """Export SmolLM2 in fp32 and int4 with its KV cache; perplexity, latency and peak RSS of each."""
    import copy

    from benchmarks.transformers import perplexity
    from benchmarks.transformers_text import decoder_windows, subset, topic_parts, topic_text
    from netshrink.models.pretrained import load_pretrained
    from netshrink.quant.gptq import GPTQ
    from netshrink.quant.onnx_decoder import decoder_perplexity, export_decoder, set_decoder_threads
    from netshrink.quant.uniform import quantize_

    pretrained = load_pretrained("smollm2")
    model, tokenizer = pretrained.model, pretrained.tokenizer
    parts = topic_parts()
    windows = decoder_windows(tokenizer, topic_text(parts["evaluation"]), WINDOW, WINDOWS)
    calibration = subset(decoder_windows(tokenizer, topic_text(parts["calibration"]), WINDOW), CALIBRATION, 0)
    quantized = copy.deepcopy(model)
    torch.set_num_threads(2)
    quantize_(quantized, GPTQ(**GPTQ_CONFIG, calibration_data=calibration))
    torch.set_num_threads(1)
    files = {p: export_decoder(m, tokenizer, folder / f"smollm2-{p}", p, check_ids=windows[:1, :128])
             for p, m in (("fp32", model), ("int4", quantized))}
    result: dict = {"context": CONTEXT, "tokens": TOKENS, "windows": [len(windows), WINDOW],
                    "int4_block": GPTQ_CONFIG["group_size"], "gptq": GPTQ_CONFIG, "calibration_windows": CALIBRATION,
                    "perplexity": {"pytorch": perplexity(model, windows)},
                    "bytes": {p: f.bytes for p, f in files.items()},
                    "difference": {p: f.difference for p, f in files.items()}}
    torch.set_num_threads(2)
    for p, f in files.items():
        result["perplexity"][p] = decoder_perplexity(f.folder, windows)
    torch.set_num_threads(1)
    context = windows[0, :CONTEXT].numpy().astype(np.int32)
    result["next_token_ms"] = {}
    for threads in THREADS:
        for f in files.values():
            set_decoder_threads(f.folder, threads)
        runners = {p: _decode_runner(f.folder, context) for p, f in files.items()}
        result["next_token_ms"][str(threads)] = {p: ms / TOKENS for p, ms in interleaved_ms(runners, ROUNDS).items()}
    for f in files.values():
        set_decoder_threads(f.folder, 1)
    result["peak_rss_mb"] = {p: _peak_rss_mb(f.folder, context) for p, f in files.items()}
    return result


def _decode_runner(folder: Path, context: np.ndarray):
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    # room for one more token: after a rewind, GenAI's first step also appends the token it recomputes
    params.set_search_options(max_length=len(context) + TOKENS + 2, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(context)

    def run() -> None:
        for _ in range(TOKENS):
            generator.generate_next_token()
        generator.rewind_to(len(context))  # the context stays cached; the next call decodes from it again
    run.model = model  # keep the model alive as long as its generator
    return run


def _peak_rss_mb(folder: Path, context: np.ndarray) -> float:
    script = RSS_SCRIPT.format(context=len(context), tokens=TOKENS)
    done = subprocess.run([sys.executable, "-c", script, str(folder), ",".join(map(str, context.tolist()))],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024  # VmHWM, in KiB


def decoder_targets(d: dict) -> list[dict]:
    out = [target(f"SmolLM2 ORT int4 vs fp32 with KV cache, next token at batch 1 after {d['context']} tokens, "
                  f"{t} thread(s): speed-up", ms["fp32"] / ms["int4"], 1.5, ">=")
           for t, ms in d["next_token_ms"].items()]
    out.append(target("SmolLM2 ORT int4 vs fp32: peak RSS ratio", d["peak_rss_mb"]["int4"] / d["peak_rss_mb"]["fp32"],
                      0.5, "<="))
    return out


def decoder_markdown(d: dict) -> list[str]:
    ppl, ms, rss = d["perplexity"], d["next_token_ms"], d["peak_rss_mb"]
    rows = [f"| {t} thread{'' if t == '1' else 's'} | {v['fp32']:.1f} | {v['int4']:.1f} | "
            f"{v['fp32'] / v['int4']:.2f}x |" for t, v in sorted(ms.items())]
    how = (f"our GPTQ codes (`{d['gptq']}`, {d['calibration_windows']} calibration windows) in MatMulNBits blocks of "
           f"{d['int4_block']}, the tied output layer and embeddings the builder's round-to-nearest" if "gptq" in d
           else f"its round-to-nearest MatMulNBits, blocks of {d['int4_block']}")
    return [f"SmolLM2-135M with its KV cache in ONNX Runtime GenAI (onnxruntime-genai's model builder; int4: {how}): "
            f"fp32 file {d['bytes']['fp32'] / 1e6:.0f} MB "
            f"(vs PyTorch {d['difference']['fp32']:.1e} of the largest logit), int4 {d['bytes']['int4'] / 1e6:.0f} MB. "
            f"Perplexity over {d['windows'][0]} evaluation windows of {d['windows'][1]} tokens: PyTorch "
            f"{ppl['pytorch']:.3f}, ONNX fp32 {ppl['fp32']:.3f}, ONNX int4 {ppl['int4']:.3f} "
            f"(x{ppl['int4'] / ppl['fp32']:.3f}). Peak RSS of a process generating {d['tokens']} tokens after "
            f"{d['context']}: fp32 {rss['fp32']:.0f} MB, int4 {rss['int4']:.0f} MB.", "",
            f"| next token after {d['context']} tokens, batch 1 (ms) | fp32 | int4 | speed-up |", "|---|---|---|---|",
            *rows, "", *(CONTENTION if ms["2"]["fp32"] > ms["1"]["fp32"] else [])]
