"""MSALanguageModel: shapes, masks, batching invariance, the chunked runner, checkpointing applied from outside,
save/load (old files too)."""

from __future__ import annotations

import pytest
import torch

from msaformer.data.alphabet import CLS_IDX, PAD_IDX
from msaformer.errors import CheckpointError, ConfigError, MsaformerError
from msaformer.infer.chunked import ChunkOptions, run_chunked
from msaformer.model import MSALanguageModel, MsaModelConfig, load_model, save_model
from msaformer.train.execution import apply_activation_checkpointing, is_checkpointed, plain_names


def random_msa(N: int, L: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 31, (N, L + 1), generator=g)
    tokens[:, 0] = CLS_IDX
    return tokens


def pad_batch(msas: list[torch.Tensor]) -> torch.Tensor:
    N = max(m.shape[0] for m in msas)
    L = max(m.shape[1] for m in msas)
    out = torch.full((len(msas), N, L), PAD_IDX, dtype=torch.long)
    for b, m in enumerate(msas):
        out[b, : m.shape[0], : m.shape[1]] = m
    return out


def make_model(seed: int = 0, **overrides) -> MSALanguageModel:
    torch.manual_seed(seed)
    model = MSALanguageModel(MsaModelConfig.preset("tiny", **overrides))
    with torch.no_grad():  # non-trivial layer norms, biases and contact regression
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def test_output_shapes():
    model = make_model()
    tokens = pad_batch([random_msa(5, 11, 0), random_msa(3, 7, 1)])
    with torch.no_grad():
        out = model(tokens, repr_layers=(0, 2, 3), need_row_attentions=True, return_contacts=True)
    assert out["logits"].shape == (2, 5, 12, 33)
    assert sorted(out["representations"]) == [0, 2, 3]
    assert out["representations"][2].shape == (2, 5, 12, 30)
    assert out["row_attentions"].shape == (2, 3, 3, 12, 12)
    assert out["contacts"].shape == (2, 11, 11)
    # padded columns of the shorter MSA read zero contacts; row attention never looks at them
    assert out["contacts"][1, 7:].abs().max() == 0
    assert out["row_attentions"][1, ..., 8:].abs().max() == 0
    assert torch.isfinite(out["logits"]).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_batching_invariance(seed):
    model = make_model(seed)
    small, big = random_msa(4, 9, seed), random_msa(7, 13, seed + 10)
    with torch.no_grad():
        alone = model(small[None], return_contacts=True)
        batched = model(pad_batch([big, small]), return_contacts=True)
    logits = batched["logits"][1, :4, :10]
    assert rel_err(logits, alone["logits"][0]) < 1e-5
    assert rel_err(batched["contacts"][1, :9, :9], alone["contacts"][0]) < 1e-5


def test_fair_esm_scaling_breaks_batching_invariance():
    model = make_model(2, row_scaling="fair_esm")
    small, big = random_msa(4, 9, 2), random_msa(7, 13, 12)
    with torch.no_grad():
        alone = model(small[None], return_contacts=True)
        batched = model(pad_batch([big, small]), return_contacts=True)
    assert rel_err(batched["logits"][1, :4, :10], alone["logits"][0]) > 1e-4


@pytest.mark.parametrize("repr_layers", [(1, 3), (0, 2, 3), (0, 1, 2, 3), ()])
def test_chunked_inference_equals_unchunked(repr_layers):
    # The runner updates one buffer in place and copies the representations asked for: every one returned
    # must still equal the unchunked one.
    tokens = pad_batch([random_msa(9, 17, 3), random_msa(6, 12, 4)])
    model = make_model(3)
    with torch.no_grad():
        a = model(tokens, repr_layers=repr_layers, return_contacts=True, need_row_attentions=True)
    # odd budget: ragged blocks of rows, columns, tokens
    b = run_chunked(model, tokens, ChunkOptions(37), repr_layers, need_row_attentions=True, return_contacts=True)
    assert set(b) == set(a)
    assert rel_err(b["logits"], a["logits"]) < 1e-5
    assert rel_err(b["row_attentions"], a["row_attentions"]) < 1e-5
    assert sorted(b["representations"]) == sorted(repr_layers)
    for layer in repr_layers:
        assert rel_err(b["representations"][layer], a["representations"][layer]) < 1e-5, layer
    assert rel_err(b["contacts"], a["contacts"]) < 1e-5


def test_column_attention_kernel_limit_chunks_columns(monkeypatch):
    import msaformer.model.attention as attention

    tokens = pad_batch([random_msa(5, 14, 5)])
    model = make_model(4)
    with torch.no_grad():
        ref = model(tokens)["logits"]
        monkeypatch.setattr(attention, "MAX_KERNEL_BATCH", 3 * 4 + 1)  # 4 columns x 3 heads per call
        out = model(tokens)["logits"]
    assert rel_err(out, ref) < 1e-5


def _grads(model: MSALanguageModel, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    out = model(tokens, repr_layers=(1,))
    loss = out["logits"].float().pow(2).mean() + out["representations"][1].mean()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_chunked_runner_refuses_training_mode():
    with pytest.raises(MsaformerError, match="eval"):
        run_chunked(make_model().train(), random_msa(3, 5, 0)[None], ChunkOptions(4))
    with pytest.raises(MsaformerError, match="token budget"):
        ChunkOptions(0)


@pytest.mark.parametrize("every", [1, 2])
def test_gradient_checkpointing_same_gradients(every):
    tokens = pad_batch([random_msa(5, 9, 6), random_msa(3, 6, 7)])
    plain = make_model(5).train()
    ckpt = apply_activation_checkpointing(make_model(5), every=every).train()
    assert [is_checkpointed(b) for b in ckpt.layers] == [i % every == 0 for i in range(3)]
    assert ckpt.state_dict().keys() == plain.state_dict().keys()  # plain names: files and exports unchanged
    g_plain = _grads(plain, tokens)
    g_ckpt = plain_names(_grads(ckpt, tokens))
    assert g_plain.keys() == g_ckpt.keys() and len(g_plain) > 10
    for name in g_plain:
        assert torch.allclose(g_plain[name], g_ckpt[name], rtol=1e-5, atol=1e-7), name


def test_checkpointing_actually_recomputes():
    tokens = pad_batch([random_msa(5, 9, 6)])
    model = make_model(5)
    calls = []
    model.layers[0].ffn.fc1.register_forward_hook(lambda *args: calls.append(1))
    apply_activation_checkpointing(model).train()
    model(tokens)["logits"].sum().backward()
    assert len(calls) == 2  # forward, then recomputed in backward
    calls.clear()
    with torch.no_grad():
        model(tokens)
    assert len(calls) == 1


def test_single_row_msa_batched_with_deeper_one():
    # all-padding columns and rows of the shallow entry must neither produce NaN nor change its outputs
    model = make_model(7)
    single, deep = random_msa(1, 5, 8), random_msa(6, 10, 9)
    with torch.no_grad():
        alone = model(single[None], repr_layers=(0,), return_contacts=True)
        batched = model(pad_batch([single, deep]), repr_layers=(0,), return_contacts=True)
    assert torch.isfinite(batched["logits"]).all() and torch.isfinite(batched["contacts"]).all()
    assert rel_err(batched["logits"][0, :1, :6], alone["logits"][0]) < 1e-5
    assert rel_err(batched["contacts"][0, :5, :5], alone["contacts"][0]) < 1e-5
    assert batched["representations"][0][0, 1:].abs().max() == 0  # padded rows embed to zero


def test_errors_are_config_errors():
    model = make_model()
    with pytest.raises(ConfigError, match="max_positions"):
        model(random_msa(2, 80, 0)[None])
    with pytest.raises(ConfigError, match="max_rows"):
        model(random_msa(40, 5, 0)[None])
    with pytest.raises(ConfigError, match="repr_layers"):
        model(random_msa(2, 5, 0)[None], repr_layers=(4,))
    with pytest.raises(ConfigError, match="row_scaling"):
        MsaModelConfig(row_scaling="padded")
    with pytest.raises(ConfigError, match="preset"):
        MsaModelConfig.preset("huge")



def test_config_field_types_are_checked():
    # values from YAML / --set arrive untyped: a string must be one clear ConfigError, not a TypeError
    # deep inside (embed_dim='abc') or a silently accepted string (dropout='abc')
    for field, value, match in [("embed_dim", "abc", "embed_dim must be an integer"),
                                ("num_heads", 2.5, "num_heads must be an integer"),
                                ("dropout", "abc", "dropout must be a number, got .abc."),
                                ("attention_dropout", 1.0, "attention_dropout"),
                                ("row_embed_dim", "2", "row_embed_dim must be an integer"),
                                ("max_rows", -1, "max_rows must be >= 0")]:  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            MsaModelConfig.preset("tiny", **{field: value})


def test_removed_execution_fields_are_named_in_configs_and_dropped_from_old_files(tmp_path):
    from msaformer.model import load_model_config

    with pytest.raises(ConfigError, match="model.blocks_per_ckpt is not a model field.*activation_checkpointing"):
        load_model_config({"preset": "tiny", "blocks_per_ckpt": 1})
    model = make_model(4)
    path = save_model(model, tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"].update(blocks_per_ckpt=2, inference_chunk_tokens=65536)  # what older files carry
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert old.config == model.config


def test_save_load_round_trip(tmp_path):
    model = make_model(9)
    path = save_model(model, tmp_path / "sub" / "model.pt")
    loaded = load_model(path)
    assert loaded.config == model.config
    tokens = random_msa(3, 10, 9)[None]
    with torch.no_grad():
        assert torch.equal(loaded(tokens)["logits"], model(tokens)["logits"])
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "msaformer-msa-lm" and payload["format_version"] == 1
    with pytest.raises(CheckpointError, match="is a directory"):  # e.g. export-weights RUN --out RUN
        save_model(model, tmp_path / "sub")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["model.pt"]  # no temporary file left


def test_load_model_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"args": 1, "model": {}}, bad)
    with pytest.raises(CheckpointError, match="convert-esm"):
        load_model(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: .*not a torch.save file") as info:
        load_model(junk)
    assert "weights_only" not in str(info.value)  # not torch's paragraph advising an unsafe reload
    import argparse

    release = tmp_path / "esm.pt"  # a fair-esm release file: names the fix
    torch.save({"args": argparse.Namespace(arch="msa_transformer"), "model": {}}, release)
    with pytest.raises(CheckpointError, match="esm.pt: a fair-esm checkpoint.*convert-esm"):
        load_model(release)


def test_yaml_configs_equal_presets():
    from pathlib import Path

    from msaformer.model import load_model_config

    root = Path(__file__).resolve().parents[1] / "configs" / "model"
    assert load_model_config(str(root / "tiny.yaml")) == MsaModelConfig.preset("tiny")
    assert load_model_config(str(root / "esm_msa1b.yaml")) == MsaModelConfig.preset("esm_msa1b")
    cfg = load_model_config("tiny", ["num_layers=5", "row_scaling=fair_esm"])
    assert cfg.num_layers == 5 and cfg.row_scaling == "fair_esm" and cfg.embed_dim == 30
    assert load_model_config({"preset": "tiny", "embed_dim": 33}).embed_dim == 33
    with pytest.raises(ConfigError, match="num_layerz"):
        load_model_config("tiny", ["num_layerz=2"])


@pytest.mark.parametrize("precision", ["bf16_weights", "bf16_autocast"])
def test_low_precision_training_and_chunked_inference_run_and_agree(precision):
    # The GPU runs: DeepSpeed bf16 (bf16 weights) for training, autocast or bf16 weights for inference.
    # On CPU, check that every path (padding, checkpointing, chunking) runs in bf16 and stays near fp32.
    tokens = pad_batch([random_msa(9, 17, 3), random_msa(6, 12, 4)])
    ref_model = make_model(5)
    with torch.no_grad():
        ref = ref_model(tokens, repr_layers=(2,), return_contacts=True)
    model = apply_activation_checkpointing(make_model(5))
    bf16_weights = precision == "bf16_weights"
    if bf16_weights:
        model = model.to(torch.bfloat16)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=not bf16_weights)
    with torch.no_grad(), autocast:
        out = run_chunked(model, tokens, ChunkOptions(37), (2,), return_contacts=True)
    assert rel_err(out["logits"].float(), ref["logits"]) < 0.05
    assert rel_err(out["representations"][2].float(), ref["representations"][2]) < 0.05
    assert rel_err(out["contacts"].float(), ref["contacts"]) < 0.05
    model.train()
    with autocast:
        loss = model(tokens)["logits"].float().logsumexp(-1).mean()
    loss.backward()
    missing = [n for n, p in plain_names(dict(model.named_parameters())).items() if p.grad is None]
    assert missing == ["contact_head.regression.weight", "contact_head.regression.bias"]  # not in the loss
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
