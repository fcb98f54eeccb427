"""Promoter classifier: padding invariance, rollout, sliding windows, checkpoints."""

import numpy as np
import pytest
import torch

from msaformer.data.promoter import PAD_IDX, collate, encode
from msaformer.errors import ConfigError, MsaformerError
from msaformer.infer.promoter import attention_rollout, explain_tokens, predict_records, window_starts
from msaformer.model.promoter import (
    PromoterClassifier,
    PromoterModelConfig,
    load_promoter_model,
    promoter_probabilities,
    save_promoter_model,
)


def _model(**kw) -> PromoterClassifier:
    torch.manual_seed(11)
    cfg = dict(embed_dim=30, num_layers=2, num_heads=3, ffn_dim=22, max_length=37, dropout=0.0)
    cfg.update(kw)
    return PromoterClassifier(PromoterModelConfig(**cfg)).eval()


def _random_seqs(n, lo, hi, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGTN"), size=rng.integers(lo, hi + 1))) for _ in range(n)]


@pytest.mark.parametrize(
    "kw",
    [
        dict(positional="learned"),
        dict(positional="sinusoidal", conv_stem=7),
        dict(positional="rotary", embed_dim=28, num_heads=2, conv_stem=5),
        dict(positional="learned", conv_stem=9, pooling="mean"),
        dict(positional="learned", conv_stem=5, conv_layers=2, pooling="mean"),
        dict(positional="rotary", embed_dim=28, num_heads=2, conv_stem=3, conv_layers=1),
    ],
)
def test_prediction_alone_equals_prediction_in_padded_batch(kw):
    model = _model(**kw)
    seqs = _random_seqs(7, 3, 37, seed=4)
    tokens = [encode(s) for s in seqs]
    batch = torch.from_numpy(collate(tokens))
    assert batch.eq(PAD_IDX).any()
    with torch.no_grad():
        together = model(batch)["logits"]
        alone = torch.stack([model(torch.from_numpy(collate([t])))["logits"][0] for t in tokens])
        weighted = model(batch, need_weights=True)["logits"]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weighted, together, atol=1e-5, rtol=1e-5)
    # The helper used by predict / training batches by length in its own order: same numbers.
    np.testing.assert_allclose(promoter_probabilities(model, tokens, batch_size=3), torch.sigmoid(alone).numpy(), atol=1e-6)


def test_padding_never_influences_real_tokens():
    """Changing what sits in padded positions' embeddings must not change the output."""
    model = _model(conv_stem=5, conv_layers=2)
    batch = torch.from_numpy(collate([encode("ACGTTGCA"), encode("AC")]))
    with torch.no_grad():
        before = model(batch)["logits"]
        model.embed_tokens.weight[PAD_IDX].normal_()
        after = model(batch)["logits"]
    torch.testing.assert_close(before, after, atol=1e-6, rtol=1e-6)


def test_rollout_rows_sum_to_one_and_pads_get_nothing():
    model = _model(num_layers=3)
    tokens = [encode(s) for s in _random_seqs(5, 4, 30, seed=9)]
    batch = torch.from_numpy(collate(tokens))
    pad = batch.eq(PAD_IDX)
    with torch.no_grad():
        out = model(batch, need_weights=True)
    assert len(out["attentions"]) == 3 and out["attentions"][0].shape == (5, 3, batch.shape[1], batch.shape[1])
    roll = attention_rollout(out["attentions"], pad)
    torch.testing.assert_close(roll.sum(-1), torch.ones(roll.shape[:2]), atol=1e-5, rtol=0)
    assert (roll[:, 0][pad] == 0).all()
    probs, rel = explain_tokens(model, tokens, batch_size=2)
    for r, t, row, b in zip(rel, tokens, roll, range(5)):
        assert len(r) == len(t)
        np.testing.assert_allclose(r, row[0, 1 : 1 + len(t)].numpy(), atol=1e-6)
        assert 0 < r.sum() <= 1 + 1e-6


def test_rollout_matches_hand_computation_on_one_layer_model():
    model = _model(num_layers=1, num_heads=3, embed_dim=21, ffn_dim=13, positional="sinusoidal")
    seq = "GATTACAG"
    batch = torch.from_numpy(collate([encode(seq)]))  # (1, 9)
    layer = model.layers[0]
    with torch.no_grad():
        x = model.embed_tokens(batch) + model.position_table[: batch.shape[1]]
        h = layer.attn_norm(x)[0]  # (T, D)
        q, k, _ = layer.attn.qkv(h).split(21, dim=-1)
        heads = []
        for i in range(3):
            sl = slice(7 * i, 7 * (i + 1))
            heads.append(torch.softmax(q[:, sl] @ k[:, sl].T / np.sqrt(7), dim=-1))
        a = torch.stack(heads).mean(0) + torch.eye(9)
        expected = a / a.sum(-1, keepdim=True)
        out = model(batch, need_weights=True)
    roll = attention_rollout(out["attentions"])[0]
    torch.testing.assert_close(roll, expected, atol=1e-5, rtol=1e-5)
    _, rel = explain_tokens(model, [encode(seq)])
    np.testing.assert_allclose(rel[0], expected[0, 1:].numpy(), atol=1e-5)


def test_window_starts_cover_the_sequence():
    assert window_starts(30, 37, 10) == [0]
    assert window_starts(100, 37, 20) == [0, 20, 40, 60, 63]
    for length in (38, 74, 75, 101):
        starts = window_starts(length, 37, 13)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + 37] = True
        assert covered.all() and starts[-1] + 37 == length


def test_long_sequences_are_scored_by_windows():
    model = _model(max_length=37)
    long_seq = _random_seqs(1, 90, 90, seed=2)[0]
    (row, wins), = predict_records(model, [("long", long_seq)], stride=20, aggregate="max")
    starts = [s for s, _ in wins]
    assert starts == window_starts(90, 37, 20) and row["n_windows"] == len(starts)
    expected = promoter_probabilities(model, [encode(long_seq[s : s + 37]) for s in starts])
    np.testing.assert_allclose([p for _, p in wins], expected, atol=1e-6)
    assert row["probability"] == pytest.approx(expected.max())
    (mean_row, _), = predict_records(model, [("long", long_seq)], stride=20, aggregate="mean")
    assert mean_row["probability"] == pytest.approx(expected.mean())
    with pytest.raises(MsaformerError, match="window"):
        model(torch.from_numpy(collate([encode(long_seq)])))


def test_checkpoint_round_trip(tmp_path):
    model = _model(conv_stem=3, positional="rotary", embed_dim=28, num_heads=2)
    save_promoter_model(model, tmp_path / "m.pt", metadata={"threshold": 0.4})
    loaded, meta = load_promoter_model(tmp_path / "m.pt")
    assert meta["threshold"] == 0.4 and loaded.config == model.config
    batch = torch.from_numpy(collate([encode("ACGTAGCTAGGA"), encode("TTA")]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)["logits"], model(batch)["logits"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MsaformerError, match="junk.pt"):
        load_promoter_model(tmp_path / "junk.pt")


def test_bad_model_config_is_a_clear_error():
    from msaformer.config import from_dict

    with pytest.raises(ConfigError, match="positional"):
        from_dict(PromoterModelConfig, {"positional": "alibi"})
    with pytest.raises(ConfigError, match="conv_stem"):
        from_dict(PromoterModelConfig, {"conv_stem": 4})
    with pytest.raises(ConfigError, match="conv_layers needs a conv_stem"):
        from_dict(PromoterModelConfig, {"conv_layers": 2})


def test_mean_pooling_rollout_averages_nucleotide_rows():
    model = _model(pooling="mean", num_layers=2)
    tokens = [encode(s) for s in _random_seqs(4, 5, 19, seed=1)]
    batch = torch.from_numpy(collate(tokens))
    with torch.no_grad():
        roll = attention_rollout(model(batch, need_weights=True)["attentions"], batch.eq(PAD_IDX))
    _, rel = explain_tokens(model, tokens)
    for b, (t, r) in enumerate(zip(tokens, rel)):
        n = len(t)
        np.testing.assert_allclose(r, roll[b, 1 : n + 1, 1 : n + 1].mean(0).numpy(), atol=1e-6)
        assert 0 < r.sum() <= 1 + 1e-6


def test_mismatched_checkpoint_is_one_line_naming_the_first_bad_tensor(tmp_path):
    import dataclasses

    from msaformer.model.files import save_model_file
    from msaformer.model.promoter import FORMAT, FORMAT_VERSION

    small, large = _model(), _model(embed_dim=36)
    path = tmp_path / "mixed.pt"  # the config of one model, the weights of another
    save_model_file(path, kind=FORMAT, version=FORMAT_VERSION, config=dataclasses.asdict(small.config),
                    state_dict=large.state_dict(), metadata={})
    with pytest.raises(MsaformerError) as err:
        load_promoter_model(path)
    first = next(iter(large.state_dict()))
    assert "mixed.pt" in str(err.value) and f"weight {first} has shape" in str(err.value)
    assert "\n" not in str(err.value)
    state = small.state_dict()
    state.pop(next(iter(state)))
    save_model_file(path, kind=FORMAT, version=FORMAT_VERSION, config=dataclasses.asdict(small.config),
                    state_dict=state, metadata={})
    with pytest.raises(MsaformerError, match=f"missing {first}"):
        load_promoter_model(path)


def test_bf16_probabilities_follow_fp32_and_unknown_precision_is_refused():
    model = _model(conv_stem=5, conv_layers=2, pooling="mean")
    tokens = [encode(s) for s in _random_seqs(40, 20, 37, seed=3)]
    fp32 = promoter_probabilities(model, tokens, batch_size=16)
    bf16 = promoter_probabilities(model, tokens, batch_size=16, precision="bf16")
    assert bf16.dtype == np.float64 and np.abs(bf16 - fp32).max() < 1e-2
    assert not model.training
    with pytest.raises(MsaformerError, match="precision must be one of"):
        promoter_probabilities(model, tokens, precision="fp16")


def test_conv_over_tokens_matches_conv1d_of_the_transposed_tensor_forward_and_backward():
    """The channels-last 2-D convolution the model runs computes what ``nn.Conv1d`` computes, gradients too."""
    from msaformer.model.promoter import conv_over_tokens

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 5, 9, padding=4)
    x = torch.randn(3, 17, 6, requires_grad=True)
    ours = conv_over_tokens(conv, x)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    assert ours.shape == (3, 17, 5)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    ours_grads = torch.autograd.grad(ours, [x, conv.weight, conv.bias], grad)
    ref_grads = torch.autograd.grad(ref, [x, conv.weight, conv.bias], grad)
    for a, b in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
