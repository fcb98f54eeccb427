"""Batch inference (msaformer.infer.msa): outputs, parity with the model and with fair-esm, error paths."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from msaformer.data import read_alignments
from msaformer.data.alphabet import encode_msa
from msaformer.errors import MsaformerError
from msaformer.infer.msa import EmbedOptions, MsaInference, embed, read_embeddings, root_attributes
from msaformer.model import MSALanguageModel, MsaModelConfig, load_model, save_model
from tests.paths import MSA, needs_shared

DATA = MSA
pytestmark = needs_shared
# (file, rows, columns): odd, unequal shapes, all shorter than the test model's 100 positions
SMALL = {
    "fn3": (DATA / "hmmer/fn3.sto", 98, 86),
    "UniRef50_E9K9Y4": (DATA / "esm/UniRef50_E9K9Y4.a3m", 17, 98),
    "uniref90_hits": (DATA / "openfold/uniref90_hits.sto", 57, 73),
    "2q2k_A_bfd_uniclust_hits": (DATA / "openfold/2q2k_A_bfd_uniclust_hits.a3m", 4, 70),
}
MAX_SEQS = 13


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(7)
    model = MSALanguageModel(MsaModelConfig.preset("tiny", max_positions=101))
    with torch.no_grad():  # non-trivial contact regression so contacts are not all 0.5
        model.contact_head.regression.weight.normal_(0, 2.0)
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.pt")


def _opts(**kw) -> EmbedOptions:
    kw.setdefault("max_seqs", MAX_SEQS)
    return EmbedOptions(**kw)


def _direct_forward(model, path: Path, rows: int, **kw) -> dict:
    (msa,) = read_alignments(path)
    tokens = torch.from_numpy(encode_msa(msa.tokens[:rows]))[None]
    with torch.no_grad():
        return model(tokens, **kw)


def test_outputs_shapes_dtypes_index_and_root_attributes(checkpoint, tmp_path):
    out = tmp_path / "res.h5"
    summary = embed([SMALL[k][0] for k in SMALL], checkpoint, out, _opts(toks_per_batch=5000))
    assert (summary.ok, summary.failed) == (4, 0)
    results = read_embeddings(out)
    assert set(results) == set(SMALL)
    for name, (path, depth, length) in SMALL.items():
        r = results[name]
        assert r["per_tok"].shape == (length, 30) and r["per_tok"].dtype == np.float32
        assert r["mean"].shape == (30,) and r["mean"].dtype == np.float32
        assert r["contacts"].shape == (length, length) and r["contacts"].dtype == np.float32
        assert r["logits"].shape == (length, 33) and r["logits"].dtype == np.float32
        assert r["attrs"]["rows_used"] == min(depth, MAX_SEQS) and r["attrs"]["depth"] == depth
        assert r["attrs"]["source"] == str(path)
    root = root_attributes(out)
    assert root["checkpoint"] == str(checkpoint)
    assert root["model_config"]["embed_dim"] == 30 and root["repr_layers"] == [3]
    assert root["options"]["max_seqs"] == MAX_SEQS and root["msaformer_version"]
    with open(out.with_suffix(".csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == list(SMALL)  # input order, whatever the batching order
    assert all(r["status"] == "ok" for r in rows)
    assert [int(r["rows_used"]) for r in rows] == [min(d, MAX_SEQS) for _, d, _ in SMALL.values()]
    assert [int(r["length"]) for r in rows] == [n for _, _, n in SMALL.values()]


@pytest.mark.parametrize("toks_per_batch", [50_000, 700])  # one padded batch / chunked single MSAs
def test_embedding_equals_model_forward_on_same_tokens(checkpoint, tmp_path, toks_per_batch):
    out = tmp_path / "res.h5"
    embed([SMALL[k][0] for k in SMALL], checkpoint, out,
          _opts(toks_per_batch=toks_per_batch, repr_layers=(-1, 1)))  # fmt: skip
    results = read_embeddings(out)
    model = load_model(checkpoint).eval()
    for name, (path, depth, length) in SMALL.items():
        ref = _direct_forward(model, path, MAX_SEQS, repr_layers=[1, 3], return_contacts=True)
        r = results[name]
        np.testing.assert_allclose(r["per_tok_layer3"], ref["representations"][3][0, 0, 1:].numpy(), atol=2e-5)
        np.testing.assert_allclose(r["per_tok_layer1"], ref["representations"][1][0, 0, 1:].numpy(), atol=2e-5)
        np.testing.assert_allclose(r["logits"], ref["logits"][0, 0, 1:].numpy(), atol=5e-5)
        np.testing.assert_allclose(r["contacts"], ref["contacts"][0].numpy(), atol=2e-5)
        np.testing.assert_allclose(r["mean_layer3"], r["per_tok_layer3"].mean(0), atol=1e-6)  # query has no gaps


def test_contact_maps_symmetric_in_unit_interval(checkpoint, tmp_path):
    out = tmp_path / "res.h5"
    embed([SMALL["fn3"][0], SMALL["uniref90_hits"][0]], checkpoint, out, _opts(include=("contacts",)))
    for r in read_embeddings(out).values():
        c = r["contacts"]
        assert set(r) == {"attrs", "contacts"}
        np.testing.assert_allclose(c, c.T, atol=1e-6)
        assert c.min() >= 0.0 and c.max() <= 1.0 and c.std() > 1e-3


def test_fair_esm_converted_model_gives_fair_esm_contacts(tmp_path):
    esm = pytest.importorskip("esm")
    from msaformer.model import from_fair_esm

    torch.manual_seed(3)
    args = argparse.Namespace(layers=2, embed_dim=24, ffn_embed_dim=40, attention_heads=4, dropout=0.0,
                              attention_dropout=0.0, activation_dropout=0.0, max_tokens_per_msa=2**14,
                              max_tokens=2**14, max_positions=111, embed_positions_msa=True, logit_bias=False)
    alphabet = esm.Alphabet.from_architecture("msa_transformer")
    reference = esm.model.msa_transformer.MSATransformer(args, alphabet).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = save_model(from_fair_esm(reference), tmp_path / "converted.pt")

    # a 12-row MSA shares a padded batch with the 13-row ones: the converted model scales tied row attention
    # by each MSA's own rows (real_rows, the default), so every MSA still gets exactly fair-esm's numbers
    (fn3,) = read_alignments(SMALL["fn3"][0])
    shallow = tmp_path / "shallow.a3m"
    shallow.write_text("".join(f">{n}\n{s}\n" for n, s in zip(fn3.names[:12], fn3.sequences[:12])))
    files = [SMALL["fn3"][0], SMALL["UniRef50_E9K9Y4"][0], shallow]
    out = tmp_path / "esm.h5"
    embed(files, ckpt, out, _opts(include=("contacts", "logits"), toks_per_batch=10**6))
    results = read_embeddings(out)
    converter = alphabet.get_batch_converter()
    for path, name in zip(files, ("fn3", "UniRef50_E9K9Y4", "shallow")):
        (msa,) = read_alignments(path)
        rows = [(n, s) for n, s in zip(msa.names, msa.sequences)][:MAX_SEQS]
        _, _, tokens = converter([rows])
        with torch.no_grad():
            expected = reference(tokens, return_contacts=True)
        np.testing.assert_allclose(results[name]["contacts"], expected["contacts"][0].numpy(), atol=2e-5)
        np.testing.assert_allclose(results[name]["logits"], expected["logits"][0, 0, 1:].numpy(), atol=1e-4)


def _bad_inputs(tmp_path: Path) -> list[Path]:
    ragged = tmp_path / "ragged.a3m"
    ragged.write_text(">q\nACDEFGHIKL\n>s\nACDEF\n")
    empty = tmp_path / "empty.a3m"
    empty.write_text("")
    too_long = tmp_path / "long.a3m"
    too_long.write_text(">q\n" + "A" * 101 + "\n")  # 101 columns + <cls> > 101 positions
    too_deep = tmp_path / "deep.a3m"
    too_deep.write_text("".join(f">s{i}\nMKV{'ACDEFGHIKL'[i % 10]}W\n" for i in range(41)))  # 41 rows > 37
    return [ragged, empty, too_long, too_deep]


def test_bad_msas_are_recorded_and_skipped(checkpoint, tmp_path):
    bad = _bad_inputs(tmp_path)
    out = tmp_path / "res.h5"
    good = SMALL["2q2k_A_bfd_uniclust_hits"][0]
    summary = embed([bad[0], good, *bad[1:]], checkpoint, out, _opts(on_error="skip", max_seqs=0))
    assert (summary.ok, summary.failed) == (1, 4)
    with open(out.with_suffix(".csv")) as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    assert rows["2q2k_A_bfd_uniclust_hits"]["status"] == "ok"
    assert "aligned" in rows["ragged"]["status"] or "ragged" in rows["ragged"]["status"]
    assert "empty" in rows["empty"]["status"]
    assert "longer than the model's 100 positions" in rows["long"]["status"]
    assert "41 rows" in rows["deep"]["status"] and "37" in rows["deep"]["status"]
    assert list(read_embeddings(out)) == ["2q2k_A_bfd_uniclust_hits"]


@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_fail_mode_names_the_input_and_writes_nothing(checkpoint, tmp_path, which):
    bad = _bad_inputs(tmp_path)[which]
    out = tmp_path / "out" / "res.h5"
    out.parent.mkdir()
    with pytest.raises(MsaformerError, match=str(bad).replace(".", r"\.")):
        embed([SMALL["2q2k_A_bfd_uniclust_hits"][0], bad], checkpoint, out, _opts(max_seqs=0))
    assert list(out.parent.iterdir()) == []


def test_interrupted_run_leaves_previous_output_and_no_temp_files(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "res.h5"
    embed([SMALL["fn3"][0]], checkpoint, out, _opts(plot=True))
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    calls = []

    def interrupt(self, tokens, *a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return original(self, tokens, *a, **k)

    original = MsaInference.forward
    monkeypatch.setattr(MsaInference, "forward", interrupt)
    with pytest.raises(KeyboardInterrupt):
        embed([SMALL[k][0] for k in SMALL], checkpoint, out, _opts(toks_per_batch=1200, plot=True))
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # nothing new, nothing touched
    assert list(read_embeddings(out)) == ["fn3"]


def test_rerun_reuses_what_the_previous_output_holds(checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "res.h5"
    files = [SMALL[k][0] for k in ("fn3", "UniRef50_E9K9Y4")]
    first = embed(files, checkpoint, out, _opts(plot=True, include=("mean", "contacts_csv")))
    assert (first.ok, first.reused) == (2, 0)
    reference = read_embeddings(out)
    pngs = {p.name: p.read_bytes() for p in (tmp_path / "res_plots").iterdir()}
    computed = []
    original = MsaInference.forward

    def counting(self, tokens, *a, **k):
        computed.append(tokens.shape)
        return original(self, tokens, *a, **k)

    monkeypatch.setattr(MsaInference, "forward", counting)
    files.append(SMALL["2q2k_A_bfd_uniclust_hits"][0])
    again = embed(files, checkpoint, out, _opts(plot=True, include=("mean", "contacts_csv")))
    assert (again.ok, again.reused) == (3, 2) and len(computed) == 1  # only the new MSA ran
    results = read_embeddings(out)
    for name in reference:
        np.testing.assert_array_equal(results[name]["mean"], reference[name]["mean"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "res_plots").iterdir() if p.name in pngs} == pngs
    assert len(list((tmp_path / "res_contacts").iterdir())) == 3
    computed.clear()
    embed(files, checkpoint, out, _opts(plot=True, include=("mean", "contacts_csv"), max_seqs=5))
    assert len(computed) >= 1  # other options: nothing is reused


def test_plots_ranked_csvs_and_unique_group_names(checkpoint, tmp_path):
    out = tmp_path / "res.h5"
    src = SMALL["2q2k_A_bfd_uniclust_hits"][0]
    twin = tmp_path / "x" / src.name  # the same name twice: groups must not collide
    twin.parent.mkdir()
    twin.write_bytes(src.read_bytes())
    embed([src, twin], checkpoint, out, _opts(include=("mean", "contacts_csv"), plot=True, top_contacts=4))
    groups = sorted(read_embeddings(out))
    assert groups == ["2q2k_A_bfd_uniclust_hits", "2q2k_A_bfd_uniclust_hits_2"]
    for g in groups:
        png = tmp_path / "res_plots" / f"{g}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with open(tmp_path / "res_contacts" / f"{g}.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["range"] for r in rows] == ["long"] * 4 + ["medium"] * 4 + ["short"] * 4
    with h5py.File(out) as h5:
        assert set(h5[groups[0]]) == {"mean"}
        assert json.loads(h5.attrs["options"])["include"] == ["mean", "contacts_csv"]


def test_shard_directory_input(checkpoint, tmp_path):
    from msaformer.data.preprocess import write_msas

    msas = [msa for key in ("UniRef50_E9K9Y4", "2q2k_A_bfd_uniclust_hits") for msa in read_alignments(SMALL[key][0])]
    write_msas(tmp_path / "shards", msas, shard_size_records=1)
    out = tmp_path / "res.h5"
    summary = embed([tmp_path / "shards"], checkpoint, out, _opts(include=("per_tok",)))
    assert summary.ok == 2
    shapes = sorted(r["per_tok"].shape for r in read_embeddings(out).values())
    assert shapes == [(70, 30), (98, 30)]


def test_option_errors(checkpoint, tmp_path):
    with pytest.raises(MsaformerError, match="--include"):
        EmbedOptions(include=("per_tok", "attention"))
    with pytest.raises(MsaformerError, match="--subsample"):
        EmbedOptions(subsample="best")
    with pytest.raises(MsaformerError, match="--top-contacts .* got -3"):
        EmbedOptions(include=("contacts_csv",), top_contacts=-3)  # would silently drop the last 3 pairs
    with pytest.raises(MsaformerError, match="--repr-layers 4"):
        embed([SMALL["fn3"][0]], checkpoint, tmp_path / "r.h5", _opts(repr_layers=(4,)))
    with pytest.raises(MsaformerError, match="input not found"):
        embed([tmp_path / "missing.a3m"], checkpoint, tmp_path / "r.h5", _opts())
    with pytest.raises(MsaformerError, match="checkpoint not found"):
        embed([SMALL["fn3"][0]], tmp_path / "nope.pt", tmp_path / "r.h5", _opts())
    with pytest.raises(MsaformerError, match="output folder does not exist"):
        embed([SMALL["fn3"][0]], checkpoint, tmp_path / "no" / "r.h5", _opts())
    assert not (tmp_path / "r.h5").exists()


def test_bf16_autocast_on_request_stores_float32_close_to_fp32(checkpoint, tmp_path):
    path = SMALL["UniRef50_E9K9Y4"][0]
    embed([path], checkpoint, tmp_path / "bf.h5", _opts(dtype="bf16"))
    embed([path], checkpoint, tmp_path / "fp.h5", _opts(dtype="fp32"))
    assert root_attributes(tmp_path / "bf.h5")["precision"] == "bf16"
    assert root_attributes(tmp_path / "fp.h5")["precision"] == "fp32"  # the CPU default
    bf = read_embeddings(tmp_path / "bf.h5")["UniRef50_E9K9Y4"]
    fp = read_embeddings(tmp_path / "fp.h5")["UniRef50_E9K9Y4"]
    for key in ("per_tok", "logits", "contacts"):
        assert bf[key].dtype == np.float32
        scale = float(np.abs(fp[key]).max())
        assert 0 < float(np.abs(bf[key] - fp[key]).max()) < 0.05 * scale
