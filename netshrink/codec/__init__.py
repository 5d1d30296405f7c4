"""Codecs: bit packing, sparse relative index, Huffman, ANS, float byte planes (Deep Compression, Han et al. 2016)."""

__all__ = ["inspect_report", "load", "save"]


def __getattr__(name: str):
    """``save``, ``load`` and ``inspect_report`` on first use, so importing a primitive stays light."""
    if name in ("save", "load"):
        from netshrink.codec import container

        return getattr(container, name)
    if name == "inspect_report":
        from netshrink.codec.inspect import inspect_report

        return inspect_report
    raise AttributeError(f"module 'netshrink.codec' has no attribute {name!r}")
