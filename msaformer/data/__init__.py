"""Alignment parsing, HDF5 shards and datasets.

Public API: :class:`Msa`, :func:`parse_alignment`, :func:`read_alignments`, :class:`ShardReader`.
"""

from msaformer.data.msa import Msa

__all__ = ["Msa"]

# Parsers and shards are imported lazily so that ``import msaformer.data`` stays cheap and a module being
# written does not break the others.


def __getattr__(name):  # PEP 562
    if name in ("parse_alignment", "read_alignments", "detect_format"):
        from msaformer.data import parsers

        return getattr(parsers, name)
    if name == "ShardReader":
        from msaformer.data import shards

        return getattr(shards, name)
    raise AttributeError(f"module 'msaformer.data' has no attribute {name!r}")
