"""Models: the axial-attention MSA language model (and its building blocks) and the promoter classifier."""

from msaformer.model.attention import ColumnSelfAttention, RowSelfAttention, SelfAttention
from msaformer.model.convert import from_fair_esm
from msaformer.model.msa_lm import PRESETS, MSALanguageModel, MsaModelConfig, load_model_config
from msaformer.model.serialization import load_model, save_model

__all__ = [
    "ColumnSelfAttention",
    "MSALanguageModel",
    "MsaModelConfig",
    "PRESETS",
    "RowSelfAttention",
    "SelfAttention",
    "from_fair_esm",
    "load_model_config",
    "load_model",
    "save_model",
]
