"""Batch inference.

- :mod:`msaformer.infer.msa`: ``embed`` (embeddings, contacts, logits of many MSAs into one HDF5 file),
  :class:`~msaformer.infer.msa.MsaInference` (a model on a device, with precision and token budget).
- :mod:`msaformer.infer.variants`: zero-shot masked-marginal variant scores.
- :mod:`msaformer.infer.inputs`, :mod:`~msaformer.infer.subsample`, :mod:`~msaformer.infer.batching`,
  :mod:`~msaformer.infer.writer`, :mod:`~msaformer.infer.contacts`: the building blocks.
- :mod:`msaformer.infer.promoter`: promoter predictions and attributions.

Submodules are imported on use, so ``import msaformer.infer`` does not load torch.
"""
