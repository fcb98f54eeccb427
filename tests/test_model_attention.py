"""SelfAttention, the generic block the promoter encoder builds on."""

from __future__ import annotations

import torch

from msaformer.model import SelfAttention


def test_sdpa_and_explicit_softmax_paths_agree_with_padding():
    torch.manual_seed(0)
    attn = SelfAttention(embed_dim=15, num_heads=3).eval()
    x = torch.randn(2, 7, 15)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 4:] = True
    fast, none = attn(x, key_padding_mask=pad)
    slow, weights = attn(x, key_padding_mask=pad, need_weights=True)
    assert none is None
    assert weights.shape == (2, 3, 7, 7)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert weights[1, :, :, 4:].abs().max() == 0
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))
    # padding keys do not influence real queries
    x2 = x.clone()
    x2[1, 4:] = 100.0
    out2, _ = attn(x2, key_padding_mask=pad)
    torch.testing.assert_close(out2[1, :4], fast[1, :4], rtol=1e-5, atol=1e-6)


def test_matches_torch_multihead_attention():
    torch.manual_seed(1)
    ours = SelfAttention(embed_dim=10, num_heads=2).eval()
    ref = torch.nn.MultiheadAttention(10, 2, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(3, 5, 10)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    out, w = ours(x, key_padding_mask=pad, need_weights=True)
    ref_out, ref_w = ref(x, x, x, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)


def test_qk_transform_is_applied_to_queries_and_keys():
    torch.manual_seed(2)
    attn = SelfAttention(embed_dim=12, num_heads=4, bias=False).eval()
    x = torch.randn(1, 6, 12)
    seen = {}

    def transform(q, k):
        seen["shape"] = tuple(q.shape)
        return q * 0, k  # uniform attention

    out, w = attn(x, need_weights=True, qk_transform=transform)
    assert seen["shape"] == (1, 4, 6, 3)
    torch.testing.assert_close(w, torch.full((1, 4, 6, 6), 1 / 6))
    v = x @ attn.qkv.weight[24:].T
    expected = v.mean(1, keepdim=True).expand(1, 6, 12) @ attn.out_proj.weight.T
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    fast, _ = attn(x, qk_transform=transform)
    torch.testing.assert_close(fast, out, rtol=1e-5, atol=1e-6)
