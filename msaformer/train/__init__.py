"""Training under DeepSpeed ZeRO: a generic engine (``engine``), the MSA masked-LM loop (``loop``), its
configuration (``config``) and weight export (``export``). Run with ``msaformer train`` or
``python -m msaformer.train``.
"""
