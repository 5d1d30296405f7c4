"""The tensor encodings, one unit per file, registered in ``ENCODINGS`` (the one list).

The order is the tie-break order of ``tensor_encodings.encode_tensor`` (cheapest wins, ties to
the earlier), so ``dense``, exact for everything, comes first. To add an encoding, write a
subclass of ``base.Encoding`` in a new file and add an instance here: chains, stream roles,
validation, decoding and the decoded-bytes bound all follow from the unit.
"""

from __future__ import annotations

from netshrink.codec.encodings.affine_int import AffineInt
from netshrink.codec.encodings.base import Encoding
from netshrink.codec.encodings.binary import Binary
from netshrink.codec.encodings.codebook import Codebook
from netshrink.codec.encodings.dense import Dense
from netshrink.codec.encodings.float_planes import FloatBytes
from netshrink.codec.encodings.group_fmin import GroupFloatMin
from netshrink.codec.encodings.group_int import GroupInt
from netshrink.codec.encodings.sparse import PREFIX, Sparse
from netshrink.core.errors import NetshrinkFormatError

ENCODINGS: list[Encoding] = [Dense(), FloatBytes(), AffineInt(), GroupInt(), GroupFloatMin(), Codebook(), Binary(),
                             Sparse()]


def encoding(name: str) -> Encoding:
    """The registered encoding called ``name`` (KeyError if none is)."""
    for unit in ENCODINGS:
        if unit.name == name:
            return unit
    raise KeyError(name)


def chains() -> tuple[tuple[str, ...], ...]:
    """Every valid chain: a value or whole-tensor encoding alone, or a wrapper then a value encoding."""
    return (*((e.name,) for e in ENCODINGS if not e.wraps),
            *((w.name, v.name) for w in ENCODINGS if w.wraps for v in ENCODINGS if v.values))


def parse_chain(name: object, partial: bool = False) -> tuple[str, ...]:
    """``"sparse+codebook"`` -> ``("sparse", "codebook")``, a known chain or a format error.
    ``partial=True`` also accepts a wrapper alone (``"sparse"``: sparse + any value encoding), as
    ``save``'s requested encodings may name it."""
    chain = tuple(name.split("+")) if isinstance(name, str) else ()
    known = chains()
    if chain in known or (partial and len(chain) == 1 and any(e.wraps and e.name == chain[0] for e in ENCODINGS)):
        return chain
    raise NetshrinkFormatError(f"unknown encoding {str(name)[:60]!r}; known: {['+'.join(c) for c in known]}")


def chain_roles(chain: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Every stream role a chain needs, with its kind, in file order."""
    head = encoding(chain[0])
    roles = dict(head.roles)
    if head.wraps:
        roles.update({PREFIX + role: kind for role, kind in encoding(chain[1]).roles.items()})
    return roles


__all__ = ["ENCODINGS", "Encoding", "chain_roles", "chains", "encoding", "parse_chain"]
