"""fair-esm release checkpoint -> `msaformer convert-esm` -> load_model gives fair-esm's outputs."""

from __future__ import annotations

import argparse

import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data.alphabet import CLS_IDX
from msaformer.errors import CheckpointError
from msaformer.model import MsaModelConfig, from_fair_esm, load_model
from msaformer.model.convert import build_fair_esm

pytest.importorskip("esm")


def release_format(esm_model) -> tuple[dict, dict]:
    """Returns (checkpoint, contact regression) dicts laid out like fair-esm's published .pt files."""
    args = argparse.Namespace(arch="msa_transformer")
    for key, value in vars(esm_model.args).items():
        if key in ("layers", "embed_dim", "ffn_embed_dim", "attention_heads"):
            key = f"encoder_{key}"
        setattr(args, key, value)
    model, regression = {}, {}
    for key, value in esm_model.state_dict().items():
        if key.startswith("contact_head."):
            regression[key] = value.clone()
            continue
        # the release names row attention "column" and vice versa
        swapped = key.replace("row", "column") if "row" in key else key.replace("column", "row")
        prefix = "encoder." if swapped.startswith("lm_head") else "encoder.sentence_encoder."
        model[prefix + swapped] = value.clone()
    return {"args": args, "model": model}, {"model": regression}


def tokens_for(N: int, L: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    t = torch.randint(4, 31, (1, N, L + 1), generator=g)
    t[..., 0] = CLS_IDX
    return t


def test_release_format_round_trip_through_cli(tmp_path):
    config = MsaModelConfig.preset("tiny", max_rows=1024, num_layers=2)
    esm_model = build_fair_esm(config, seed=3, perturb=0.05)
    ckpt, regression = release_format(esm_model)
    assert any(".column_self_attention." in k for k in ckpt["model"])
    torch.save(ckpt, tmp_path / "esm_msa.pt")
    torch.save(regression, tmp_path / "esm_msa-contact-regression.pt")
    result = CliRunner().invoke(
        app,
        ["convert-esm", str(tmp_path / "esm_msa.pt"), "--contact-regression",
         str(tmp_path / "esm_msa-contact-regression.pt"), "--out", str(tmp_path / "model.pt")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "model.pt")
    assert model.config.row_scaling == "real_rows"  # the default: equal to fair-esm on unpadded MSAs
    tokens = tokens_for(6, 9)
    with torch.no_grad():
        ref = esm_model(tokens, return_contacts=True)
        out = model(tokens, return_contacts=True)
    torch.testing.assert_close(out["logits"], ref["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["contacts"], ref["contacts"], rtol=1e-5, atol=1e-6)


def test_converted_model_is_batching_invariant_and_fair_esm_scaling_stays_available():
    from msaformer.data.alphabet import PAD_IDX

    config = MsaModelConfig.preset("tiny", max_rows=1024, num_layers=2)
    esm_model = build_fair_esm(config, seed=6, perturb=0.05)
    small, big = tokens_for(4, 9)[0], tokens_for(11, 14)[0]
    batch = torch.full((2, 11, 15), PAD_IDX, dtype=torch.long)
    batch[0, :11, :15], batch[1, :4, :10] = big, small  # the MSA next to a deeper, longer one
    for row_scaling, invariant in (("real_rows", True), ("fair_esm", False)):
        model = from_fair_esm(esm_model, row_scaling=row_scaling)
        with torch.no_grad():
            alone = model(small[None], return_contacts=True)
            batched = model(batch, return_contacts=True)
            ref = esm_model(small[None], return_contacts=True)
        torch.testing.assert_close(alone["logits"], ref["logits"], rtol=1e-5, atol=1e-5)  # parity, unpadded
        same = torch.allclose(batched["logits"][1, :4, :10], alone["logits"][0], rtol=1e-5, atol=1e-5) and \
            torch.allclose(batched["contacts"][1, :9, :9], alone["contacts"][0], rtol=1e-5, atol=1e-6)
        assert same == invariant, row_scaling
    runner = CliRunner()
    ckpt, _ = release_format(esm_model)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        torch.save(ckpt, f"{tmp}/esm.pt")
        result = runner.invoke(app, ["convert-esm", f"{tmp}/esm.pt", "--row-scaling", "fair_esm", "-o", f"{tmp}/m.pt"])
        assert result.exit_code == 0, result.output
        assert load_model(f"{tmp}/m.pt").config.row_scaling == "fair_esm"


def test_from_live_module_equals_from_release_dict():
    config = MsaModelConfig.preset("tiny", max_rows=1024)
    esm_model = build_fair_esm(config, seed=4, perturb=0.05)
    ckpt, regression = release_format(esm_model)
    a, b = from_fair_esm(esm_model), from_fair_esm(ckpt, contact_regression=regression)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_convert_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["convert-esm", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 1
    assert "checkpoint not found" in result.output and "Traceback" not in result.output
    torch.save({"args": argparse.Namespace(arch="roberta_large"), "model": {}}, tmp_path / "esm1b.pt")
    result = runner.invoke(app, ["convert-esm", str(tmp_path / "esm1b.pt"), "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 1 and "not an MSA Transformer" in result.output
    with pytest.raises(CheckpointError):
        from_fair_esm({"weights": {}})


def test_convert_names_the_file_at_fault(tmp_path):
    # garbage, a bare state dict, an msaformer model file, and the model file given as contact regression
    runner = CliRunner()
    config = MsaModelConfig.preset("tiny", max_rows=1024, num_layers=1)
    esm_model = build_fair_esm(config, seed=5, perturb=0.05)
    ckpt, _ = release_format(esm_model)
    torch.save(ckpt, tmp_path / "esm_msa.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage\n")
    torch.save(esm_model.state_dict(), tmp_path / "state.pt")
    from msaformer.model import save_model

    save_model(from_fair_esm(esm_model), tmp_path / "ours.pt")
    cases = [
        (["junk.pt"], "junk.pt: not a torch.save file"),
        (["state.pt"], "state.pt: expected a fair-esm MSA Transformer release file"),
        (["ours.pt"], "ours.pt: .*found an msaformer model file"),
        (["esm_msa.pt", "--contact-regression", str(tmp_path / "esm_msa.pt")], "esm_msa.pt: not a contact-regression file"),
    ]
    for args, pattern in cases:
        args = [str(tmp_path / args[0]), *args[1:]]
        result = runner.invoke(app, ["convert-esm", *args, "--out", str(tmp_path / "m.pt")])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
        import re

        assert re.search(pattern, " ".join(result.output.split())), result.output
    assert not (tmp_path / "m.pt").exists()
