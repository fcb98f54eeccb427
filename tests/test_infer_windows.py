"""Column windows for MSAs longer than the model (msaformer.infer.windows, embed --window / --stride)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data.msa import Msa
from msaformer.errors import MsaformerError
from msaformer.infer.msa import EmbedOptions, MsaInference, embed, read_embeddings
from msaformer.infer.windows import combine_windows, slice_columns, window_spans
from msaformer.model import MSALanguageModel, MsaModelConfig, save_model

INCLUDE = ("per_tok", "mean", "contacts", "logits")
LENGTH = 83


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 101-position model (sees the whole 83-column MSA at once) and a family-like MSA (substituted copies
    of one ancestor, some gaps)."""
    root = tmp_path_factory.mktemp("windows")
    torch.manual_seed(4)
    model = save_model(MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=101)), root / "m.pt")
    rng = np.random.default_rng(9)
    letters = np.frombuffer(b"ACDEFGHIKLMNPQRSTVWY", dtype=np.uint8)
    ancestor = letters[rng.integers(0, 20, LENGTH)]
    rows = np.repeat(ancestor[None], 13, axis=0)
    change = rng.random(rows.shape) < 0.3
    rows[change] = letters[rng.integers(0, 20, change.sum())]
    rows[1:][rng.random((12, LENGTH)) < 0.05] = ord("-")
    rows[0] = ancestor
    path = root / "fam.a3m"
    path.write_text("".join(f">r{k}\n{r.tobytes().decode()}\n" for k, r in enumerate(rows)))
    return root, model, path


def _embed(setup, name: str, **kw) -> dict:
    root, model, path = setup
    out = root / f"{name}.h5"
    embed([path], model, out, EmbedOptions(include=INCLUDE, **kw))
    return read_embeddings(out)["fam"]


def test_spans_cover_every_column_with_equal_widths():
    assert window_spans(30, 40, 20) == [(0, 30)]
    spans = window_spans(83, 40, 15)
    assert spans == [(0, 40), (15, 55), (30, 70), (43, 83)]
    assert {b - a for a, b in spans} == {40}
    with pytest.raises(MsaformerError, match="stride"):
        window_spans(83, 10, 11)


def test_one_window_holding_the_whole_msa_is_whole_msa_inference(setup):
    whole = _embed(setup, "whole")
    one = _embed(setup, "one", window=100)
    for key in INCLUDE:
        assert np.array_equal(whole[key], one[key]), key


def test_windows_average_each_window_run_on_its_own(setup):
    root, model, path = setup
    got = _embed(setup, "w40", window=40, stride=15)
    from msaformer.data import read_alignments

    msa = read_alignments(path)[0]
    runner = MsaInference.from_checkpoint(model, device="cpu")
    spans = window_spans(LENGTH, 40, 15)
    per_tok = np.zeros((LENGTH, got["per_tok"].shape[1]))
    logits = np.zeros((LENGTH, 33))
    logit_sum = np.zeros((LENGTH, LENGTH))
    count, pair_count = np.zeros(LENGTH), np.zeros((LENGTH, LENGTH))
    for a, b in spans:  # an independent loop: one forward per window, batch of one
        window = Msa(list(msa.names), np.ascontiguousarray(msa.tokens[:, a:b]), np.ascontiguousarray(msa.deletions[:, a:b]))
        out = runner.forward(runner.encode([window]), [runner.config.num_layers], contacts=True)
        per_tok[a:b] += out["representations"][runner.config.num_layers][0, 0, 1:].numpy()
        logits[a:b] += out["logits"][0, 0, 1:].numpy()
        p = out["contacts"][0].double().numpy().clip(1e-6, 1 - 1e-6)
        logit_sum[a:b, a:b] += np.log(p / (1 - p))
        count[a:b] += 1
        pair_count[a:b, a:b] += 1
    assert np.allclose(got["per_tok"], per_tok / count[:, None], atol=1e-4)
    assert np.allclose(got["logits"], logits / count[:, None], atol=1e-4)
    seen = pair_count > 0
    expected = np.zeros((LENGTH, LENGTH))
    expected[seen] = 1 / (1 + np.exp(-logit_sum[seen] / pair_count[seen]))
    assert np.allclose(got["contacts"], expected, atol=1e-5)
    assert (got["contacts"][~seen] == 0).all() and (~seen).any()  # 0 and 82 are never in one window
    assert np.allclose(got["mean"], got["per_tok"].mean(axis=0), atol=1e-5)  # the query has no gaps


def test_windowed_inference_is_close_to_a_model_that_sees_the_whole_msa(setup):
    whole = _embed(setup, "whole2")
    windowed = _embed(setup, "w60", window=60, stride=20)
    a, b = whole["per_tok"], windowed["per_tok"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    shifted = (a * np.roll(b, 9, axis=0)).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.mean() > 0.6 and cos.mean() > 3 * abs(shifted.mean())
    mean_cos = whole["mean"] @ windowed["mean"] / np.linalg.norm(whole["mean"]) / np.linalg.norm(windowed["mean"])
    assert mean_cos > 0.9
    assert windowed["contacts"].shape == (LENGTH, LENGTH) and windowed["logits"].shape == (LENGTH, 33)


def test_combine_windows_uses_logits_for_contacts():
    pieces = [{"contacts": np.full((2, 2), 0.9, np.float32)}, {"contacts": np.full((2, 2), 0.1, np.float32)}]
    out = combine_windows(3, [(0, 2), (1, 3)], pieces)["contacts"]
    assert out[1, 1] == pytest.approx(0.5) and out[0, 0] == pytest.approx(0.9) and out[0, 2] == 0


def test_window_errors_are_one_line(setup, tmp_path):
    root, model, path = setup
    result = CliRunner().invoke(app, ["embed", str(path), "-c", str(model), "-o", str(tmp_path / "x.h5"),
                                      "--window", "200"])  # fmt: skip
    assert result.exit_code == 1 and "--window 200" in result.output and "100 positions" in result.output
    result = CliRunner().invoke(app, ["embed", str(path), "-c", str(model), "-o", str(tmp_path / "x.h5"),
                                      "--window", "20", "--stride", "30"])  # fmt: skip
    assert result.exit_code == 1 and "--stride" in result.output
    assert slice_columns(Msa(["a"], np.zeros((1, 5), np.uint8) + 65, np.zeros((1, 5), np.uint8)), 1, 3).length == 2
