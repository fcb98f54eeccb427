"""Parity with fair-esm's MSA Transformer (random weights, eval, fp32, unpadded MSAs)."""

from __future__ import annotations

import pytest
import torch

from msaformer.data.alphabet import CLS_IDX
from msaformer.model import MsaModelConfig, from_fair_esm
from msaformer.model.convert import build_fair_esm

pytest.importorskip("esm")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def random_msa(B: int, N: int, L: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 31, (B, N, L + 1), generator=g)
    tokens[..., 0] = CLS_IDX
    return tokens


def assert_parity(config: MsaModelConfig, tokens: torch.Tensor, perturb: float):
    esm_model = build_fair_esm(config, seed=1, perturb=perturb)
    model = from_fair_esm(esm_model)
    layers = list(range(config.num_layers + 1))
    with torch.no_grad():
        ref = esm_model(tokens, repr_layers=layers, return_contacts=True)
        out = model(tokens, repr_layers=layers, need_row_attentions=True, return_contacts=True)
    assert rel_err(out["logits"], ref["logits"]) < 1e-5
    for i in layers:
        assert rel_err(out["representations"][i], ref["representations"][i]) < 1e-5, f"layer {i}"
    assert rel_err(out["row_attentions"], ref["row_attentions"]) < 1e-5
    assert rel_err(out["contacts"], ref["contacts"]) < 1e-5
    return esm_model, model


def test_parity_tiny():
    config = MsaModelConfig.preset("tiny", max_rows=1024)
    assert_parity(config, random_msa(2, 7, 13, seed=3), perturb=0.05)


def test_parity_tiny_single_row():
    # fair-esm special-cases one-row column attention; the general path must agree.
    config = MsaModelConfig.preset("tiny", max_rows=1024)
    assert_parity(config, random_msa(1, 1, 11, seed=4), perturb=0.05)


def test_parity_full_esm_msa1b_shape():
    config = MsaModelConfig.preset("esm_msa1b")
    esm_model, model = assert_parity(config, random_msa(1, 5, 30, seed=5), perturb=0.0)
    n_esm = sum(p.numel() for p in esm_model.parameters())
    n_ours = sum(p.numel() for p in model.parameters())
    assert n_ours == n_esm
    assert round(n_ours / 1e6, 1) == 115.6
