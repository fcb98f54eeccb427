"""msaformer: axial-attention models of protein multiple sequence alignments.

Layers: ``msaformer.data`` (parsers, HDF5 shards, datasets), ``msaformer.model`` (axial trunk, heads,
fair-esm conversion, promoter classifier), ``msaformer.train`` (DeepSpeed engine), ``msaformer.infer``
(batch inference) and ``msaformer.cli`` (the ``msaformer`` command).
"""

from msaformer.errors import MsaformerError

__version__ = "0.1.0"
__all__ = ["MsaformerError", "__version__"]
