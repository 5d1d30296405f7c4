"""ONNX Runtime's fused transformer graph: the fp32 baseline every ONNX speed-up is measured against.

``fuse_onnx(src, dst, model_type)`` runs two library passes, no hand-written fusion:

1. onnxscript's ``rewriter.ort_fusions.optimize_for_ort``: the ONNX Runtime fusions written for
   graphs from torch's dynamo exporter (scaled dot-product attention -> ``MultiHeadAttention`` ->
   ``Attention`` with packed QKV, ``SkipLayerNormalization``, ``BiasGelu``, rotary embeddings,
   RMS norm). ONNX Runtime's own optimizer matches the TorchScript exporter's attention pattern
   only, so without this pass a dynamo-exported BERT keeps its attention unfused.
2. ``onnxruntime.transformers.optimizer.optimize_model`` with the model type (``bert`` for encoders,
   ``gpt2`` for decoders), head count and width detected from the graph (0), so layers pruned to
   different head counts fuse too.
"""

from __future__ import annotations

import os

from netshrink.core.errors import NetshrinkError, one_line

#: ``optimize_model``'s model type for a Hugging Face ``config.model_type``
ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "llama": "gpt2"}


def fuse_onnx(src: str | os.PathLike, dst: str | os.PathLike, model_type: str = "bert") -> dict[str, int]:
    """Write ONNX Runtime's fused graph of ``src`` to ``dst``; returns the fused operators' counts."""
    import logging

    import onnx_ir as ir
    from onnxruntime.transformers.optimizer import optimize_model
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    from netshrink.quant.onnx_export import _quiet

    partial = f"{dst}.fusing.onnx"
    try:
        with _quiet():
            model, _ = optimize_for_ort(ir.load(str(src)))
            ir.save(model, partial)
            logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
            fused = optimize_model(partial, model_type=ORT_MODEL_TYPES.get(model_type, model_type), num_heads=0,
                                   hidden_size=0)
            fused.save_model_to_file(str(dst))
            stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    except Exception as error:  # noqa: BLE001 (the libraries' own error types)
        raise NetshrinkError(f"ONNX Runtime's graph fusion failed on {src} ({one_line(error)})") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return stats
