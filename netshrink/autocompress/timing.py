"""A latency search's clock: batch-1 latency, one thread, in the runtime the result is deployed in
(``Budget.runtime``): PyTorch eager, or ONNX Runtime on the model exported with ``torch.onnx``.

Every latency of a search is the original's, measured once, times a ratio timed interleaved with
the original (the two take turns, so another process's load slows both alike); an absolute median
on the shared CPU swung 2-5x between the table and the points.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from netshrink.core.errors import ConfigError, NetshrinkError

#: seconds each comparison runs at least: a 0.2 ms ONNX Runtime pass timed 30 times under load
#: measured one architecture at 0.188 and 0.262 ms (a search's point before and after training)
MIN_SECONDS = 1.0


class LatencyMeter:
    """Times models against ``original`` on one real sample, in ``runtime``.

    Args:
        original: the search's original (eval mode).
        inputs: real samples; the first times every run, the first eight check an ONNX export.
        runtime: ``"torch"`` or ``"onnxruntime"``.
        rounds: interleaved turns per comparison.
    """

    def __init__(self, original: nn.Module, inputs: torch.Tensor, runtime: str, rounds: int) -> None:
        self.original, self.inputs, self.runtime, self.rounds = original, inputs, runtime, rounds
        self.original_session = self._session(original, "original") if runtime == "onnxruntime" else None

    def original_ms(self) -> float:
        """The original's median batch-1 milliseconds, alone."""
        if self.original_session is None:
            from netshrink.measure.latency import measure_latency

            return measure_latency(self.original, tuple(self.inputs.shape[1:]), 1, 1, repeats=self.rounds,
                                   min_seconds=MIN_SECONDS, inputs=self.inputs)["median_ms"]
        from netshrink.measure.latency import interleaved_ms

        return interleaved_ms({"original": self._runner(self.original_session)}, self.rounds, MIN_SECONDS)["original"]

    def ratio(self, model: nn.Module) -> float:
        """``model``'s batch-1 time over the original's, timed interleaved."""
        from netshrink.measure.latency import interleaved_ms, relative_latency

        if self.original_session is None:
            return relative_latency(model, self.original, self.inputs[:1], rounds=self.rounds,
                                    min_seconds=MIN_SECONDS)
        ms = interleaved_ms({"model": self._runner(self._session(model, "trial")),
                             "original": self._runner(self.original_session)}, self.rounds, MIN_SECONDS)
        return ms["model"] / ms["original"]

    def _session(self, model: nn.Module, name: str):
        """An ONNX Runtime session of ``model``, exported into a folder removed at once (the
        session holds the serialized model: a worker process ends without exit handlers)."""
        from netshrink.quant.onnx_export import _session, export_onnx

        with tempfile.TemporaryDirectory(prefix="netshrink-latency-") as folder:
            path = Path(folder) / f"{name}.onnx"
            try:
                export_onnx(model.eval(), path, self.inputs[:8])
            except NetshrinkError as error:
                raise ConfigError(f"runtime='onnxruntime' needs an ONNX export of the {name} model: {error}") from None
            return _session(path.read_bytes())

    def _runner(self, session):
        from netshrink.quant.onnx_export import onnx_feed

        feed = onnx_feed(session, self.inputs[:1])
        return lambda: session.run(None, feed)
