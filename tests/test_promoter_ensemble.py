"""Promoter ensembles (probabilities averaged over checkpoints), the moving average of the weights, the
dev-chosen threshold, masked-nucleotide pre-training and the reuse of its encoder."""

import csv
import dataclasses

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from msaformer.data.promoter import encode
from msaformer.errors import ConfigError, MsaformerError
from msaformer.model.promoter import (
    PromoterClassifier,
    PromoterModelConfig,
    load_promoter_models,
    promoter_probabilities,
    save_promoter_model,
)
from msaformer.train.promoter import _WeightAverage, tune_threshold
from tests.paths import PROMOTER, needs_shared


def _model(seed, **kw) -> PromoterClassifier:
    torch.manual_seed(seed)
    cfg = dict(embed_dim=16, num_layers=1, num_heads=2, ffn_dim=16, max_length=30, dropout=0.0, conv_stem=5,
               pooling="mean")
    cfg.update(kw)
    model = PromoterClassifier(PromoterModelConfig(**cfg)).eval()
    with torch.no_grad():  # spread the outputs: a freshly initialised model says ~0.5 for everything
        model.head[-1].weight.mul_(200.0)
    return model


def _seqs(n, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), size=rng.integers(12, 30))) for _ in range(n)]


def _tiny_tata_run() -> list[str]:
    """Overrides of a seconds-long training run: 200 prom_core_tata records, a 12-wide model, one epoch."""
    tata = PROMOTER / "gue_prom_core_tata"
    return [f"data.train={tata / 'train.csv'}", f"data.dev={tata / 'dev.csv'}", "data.max_train_records=200",
            "model.embed_dim=12", "model.num_heads=2", "model.ffn_dim=10", "model.num_layers=1",
            "model.conv_stem=5", "optim.epochs=1", "optim.batch_size=50", "optim.warmup_steps=1", "threads=1"]


def test_ensemble_probability_is_the_mean_of_its_members(tmp_path):
    seqs = _seqs(40)
    tokens = [encode(s) for s in seqs]
    singles = []
    for k in range(3):
        model = _model(k)
        save_promoter_model(model, tmp_path / f"m{k}.pt", metadata={"threshold": 0.3 + 0.1 * k})
        singles.append(promoter_probabilities(model, tokens))
    assert np.ptp(singles[0]) > 0.2 and not np.allclose(singles[0], singles[1], atol=1e-3)
    ensemble, meta = load_promoter_models([tmp_path / f"m{k}.pt" for k in range(3)])
    np.testing.assert_allclose(promoter_probabilities(ensemble, tokens, batch_size=7), np.mean(singles, axis=0),
                               atol=1e-6)
    assert meta["threshold"] == pytest.approx(0.4) and len(meta["members"]) == 3
    one, meta1 = load_promoter_models([tmp_path / "m1.pt"])
    np.testing.assert_allclose(promoter_probabilities(one, tokens), singles[1], atol=1e-7)
    assert meta1["threshold"] == pytest.approx(0.4)

    # The CLI: predict and evaluate take -c several times; the output is the ensemble's.
    fa = tmp_path / "in.fa"
    fa.write_text("".join(f">s{i} label={i % 2}\n{s}\n" for i, s in enumerate(seqs)))
    runner = CliRunner()
    args = ["-c", str(tmp_path / "m0.pt"), "-c", str(tmp_path / "m2.pt")]
    result = runner.invoke(app, ["promoter", "predict", str(fa), *args, "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    got = [float(r["probability"]) for r in csv.DictReader(open(tmp_path / "p.csv"))]
    np.testing.assert_allclose(got, (singles[0] + singles[2]) / 2, atol=2e-6)
    result = runner.invoke(app, ["promoter", "evaluate", str(fa), *args, "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output
    assert float(next(csv.DictReader(open(tmp_path / "ev" / "metrics.csv")))["threshold"]) == pytest.approx(0.4)

    save_promoter_model(_model(5, max_length=40), tmp_path / "wide.pt")
    with pytest.raises(MsaformerError, match="max_length"):
        load_promoter_models([tmp_path / "m0.pt", tmp_path / "wide.pt"])


def test_weight_average_follows_the_ema_formula():
    model = _model(0)
    ema = _WeightAverage(model, 0.9)
    w0 = model.stem.weight.detach().clone()
    with torch.no_grad():
        model.stem.weight.add_(1.0)
    ema.update(model)
    with torch.no_grad():
        model.stem.weight.add_(1.0)
    ema.update(model)
    # d0 = min(0.9, 1/10) = 0.1: avg1 = 0.1 w0 + 0.9 (w0 + 1) = w0 + 0.9
    # d1 = min(0.9, 2/11): avg2 = d1 avg1 + (1 - d1) (w0 + 2) = w0 + 1.8
    torch.testing.assert_close(ema.state(model)["stem.weight"], w0 + 1.8)
    for _ in range(200):
        ema.update(model)
    assert ema.updates == 202 and min(0.9, 203 / 212) == 0.9  # the decay has reached its set value
    torch.testing.assert_close(ema.state(model)["stem.weight"], w0 + 2.0, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.stem.weight.detach(), w0 + 2.0)  # the live weights are not touched


def test_tuned_threshold_maximises_mcc_on_the_given_split():
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    probs = np.array([0.1, 0.2, 0.65, 0.7, 0.8, 0.9, 0.3, 0.66])
    t = tune_threshold(labels, probs)
    assert 0.65 < t <= 0.66  # the only cut that separates the classes: MCC 1
    assert tune_threshold(np.array([0, 1]), np.array([0.2, 0.8])) == pytest.approx(0.5)  # ties: nearest 0.5


def test_masking_targets_only_real_nucleotides():
    from msaformer.data.promoter import MASK_IDX, PAD_IDX, collate
    from msaformer.train.promoter import mask_nucleotides

    seqs = ["ACGTN" * 40, "AC", "NNNN", "GGGGCCCCAAAATTTT" * 15]
    tokens = torch.from_numpy(collate([encode(s) for s in seqs]))
    inputs, targets = mask_nucleotides(tokens, 0.3, torch.Generator().manual_seed(0))
    chosen = targets.ne(-100)
    acgt = (tokens >= 4) & (tokens <= 7)
    assert not (chosen & ~acgt).any()  # never <cls>, <pad> or N
    assert chosen[[0, 1, 3]].any(dim=1).all() and not chosen[2].any()  # at least one where there is one
    assert torch.equal(targets[chosen], tokens[chosen] - 4)
    assert (inputs[~chosen] == tokens[~chosen]).all() and (inputs[chosen] == MASK_IDX).float().mean() > 0.5
    assert tokens.eq(PAD_IDX).any() and 0.25 < chosen.sum() / acgt.sum() < 0.35


@needs_shared
def test_pretrain_then_reuse_the_encoder(tmp_path):
    """A tiny pre-training run writes encoder.pt; a second run starts from it (init_from) without pre-training."""
    from msaformer.errors import ConfigError
    from msaformer.model.promoter import load_encoder_weights, load_promoter_model
    from msaformer.train.promoter import load_train_config, train_promoter

    base = _tiny_tata_run()
    first = train_promoter(load_train_config(None, [*base, "pretrain.epochs=2", "pretrain.batch_size=25",
                                                    "pretrain.warmup_steps=2", f"out_dir={tmp_path / 'a'}"]))
    encoder, meta = load_promoter_model(tmp_path / "a" / "encoder.pt")
    assert meta["pretrained"] == "masked-nucleotide" and meta["steps"] == 2 * 8
    assert 0.0 < meta["masked_accuracy"] <= 1.0 and first["dev"]["n"] == 613
    fresh = PromoterClassifier(encoder.config)
    load_encoder_weights(fresh, tmp_path / "a" / "encoder.pt")
    for name, value in encoder.state_dict().items():
        if name.startswith("head.") and name.endswith("bias"):
            continue  # zero-initialised both sides
        same = torch.equal(fresh.state_dict()[name], value)
        assert same != name.startswith("head."), name  # everything but the head is carried over
    second = train_promoter(load_train_config(None, [*base, f"init_from={tmp_path / 'a' / 'encoder.pt'}",
                                                     f"out_dir={tmp_path / 'b'}"]))
    assert second["dev"]["n"] == 613 and not (tmp_path / "b" / "encoder.pt").exists()
    with pytest.raises(ConfigError, match="embed_dim 12 vs 16"):
        load_encoder_weights(PromoterClassifier(dataclasses.replace(encoder.config, embed_dim=16)),
                             tmp_path / "a" / "encoder.pt")
    with pytest.raises(ConfigError, match="exclude each other"):
        load_train_config(None, [*base, "init_from=x.pt", "pretrain.epochs=1"])


@needs_shared
@pytest.mark.parametrize("name", ["gue_prom_core", "gue_prom_core_notata", "gue_prom_core_tata"])
def test_recipes_run_on_300_nt_inputs_with_only_max_length_changed(tmp_path, name):
    """The GUE recipes train on 300-nt sequences (GUE prom_300_*) with model.max_length=300 as the one change
    (here on 64 synthetic 300-nt records made of prom_core_tata sequences, one epoch, to stay small)."""
    from pathlib import Path

    from msaformer.train.promoter import load_train_config, train_promoter

    rows = list(csv.DictReader(open(PROMOTER / "gue_prom_core_tata" / "train.csv")))
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("dev", 32)):
        with open(tmp_path / f"{split}.csv", "w") as fh:
            fh.write("sequence,label\n")
            for _ in range(n):
                parts = [rows[i] for i in rng.integers(0, len(rows), 5)]
                fh.write(f"{''.join(p['sequence'] for p in parts)[:300]},{parts[2]['label']}\n")
    config = Path(__file__).resolve().parents[1] / "configs" / "promoter" / f"{name}.yaml"
    overrides = [f"data.train={tmp_path / 'train.csv'}", f"data.dev={tmp_path / 'dev.csv'}", "data.test=",
                 "optim.epochs=1", f"out_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="max_length=300"):
        train_promoter(load_train_config(config, overrides))
    res = train_promoter(load_train_config(config, [*overrides, "model.max_length=300"]))
    assert res["dev"]["n"] == 32 and res["test"] is None
    model, _ = load_promoter_models(tmp_path / "run" / "model.pt")
    assert model.config.max_length == 300


def test_distillation_targets_mix_the_teacher_probabilities_and_the_labels(tmp_path):
    """distill_from: the train targets become w x the teacher's probabilities + (1 - w) x the labels."""
    from msaformer.train.promoter import distillation_targets, load_train_config

    teacher = _model(3)
    save_promoter_model(teacher, tmp_path / "teacher.pt")
    tokens = [encode(s) for s in _seqs(40, seed=4)]
    labels = torch.from_numpy(np.random.default_rng(5).integers(0, 2, 40).astype(np.float32))
    base = ["data.train=x.csv", "data.dev=y.csv", "model.max_length=30", f"distill_from={tmp_path / 'teacher.pt'}"]
    cfg = load_train_config(None, [*base, "distill_weight=0.25"])
    targets = distillation_targets(cfg, tokens, labels, "cpu")
    probs = promoter_probabilities(teacher, tokens)
    assert probs.std() > 0.02  # a teacher with opinions, so the mix is visible
    np.testing.assert_allclose(targets.numpy(), 0.25 * probs + 0.75 * labels.numpy(), atol=1e-6)
    only_teacher = distillation_targets(load_train_config(None, base), tokens, labels, "cpu")
    np.testing.assert_allclose(only_teacher.numpy(), probs, atol=1e-6)
    with pytest.raises(ConfigError, match="window"):
        distillation_targets(load_train_config(None, [*base, "model.max_length=70"]), tokens, labels, "cpu")
    with pytest.raises(ConfigError, match="distill_weight"):
        load_train_config(None, [*base, "distill_weight=1.5"])


@needs_shared
def test_a_student_trains_from_a_teacher_run(tmp_path):
    """A tiny run trains a teacher; a second run learns from its probabilities and records where they came from."""
    from msaformer.train.promoter import load_train_config, train_promoter

    base = _tiny_tata_run()
    train_promoter(load_train_config(None, [*base, f"out_dir={tmp_path / 'teacher'}"]))
    student = train_promoter(load_train_config(None, [*base, f"distill_from={tmp_path / 'teacher' / 'model.pt'}",
                                                      f"out_dir={tmp_path / 'student'}"]))
    assert student["dev"]["n"] == 613 and (tmp_path / "student" / "model.pt").is_file()
    assert "distill_from:" in (tmp_path / "student" / "config.yaml").read_text()
