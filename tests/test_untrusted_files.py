"""No file a user hands msaformer runs code: a pickled ``__reduce__`` payload in a model file is refused in one
line naming the file by every command that loads one (training resume and export-weights: test_train_engine)."""

from __future__ import annotations

import os

import pytest
import torch
from typer.testing import CliRunner

from msaformer.cli.main import app
from tests.paths import MSA, needs_shared


class _Payload:
    """An object whose unpickling with weights_only=False would run a command."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.fixture
def poisoned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    torch.save({"format": "msaformer-msa-lm", "format_version": 1, "config": {}, "state_dict": {"w": _Payload()}},
               path)  # fmt: skip
    (tmp_path / "seqs.fa").write_text(">a label=1\nACGTACGTAC\n>b label=0\nTTTTACGTAA\n")
    (tmp_path / "muts.csv").write_text("mutation\nA2C\n")
    return path


@needs_shared
@pytest.mark.parametrize("command", [
    ["embed", str(MSA / "esm/UniRef50_E9K9Y4.a3m"), "-o", "e.h5"],
    ["contacts", str(MSA / "esm/UniRef50_E9K9Y4.a3m"), "-o", "c.h5"],
    ["score-variants", "--msa", str(MSA / "esm/UniRef50_E9K9Y4.a3m"), "--mutations", "muts.csv", "-o", "s.csv"],
])  # fmt: skip
def test_inference_commands_refuse_pickled_code(poisoned, command):
    result = CliRunner().invoke(app, [*command, "-c", str(poisoned)])
    assert result.exit_code == 1 and "model.pt" in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (poisoned.parent / "PWNED").exists()


@pytest.mark.parametrize("command", [
    ["promoter", "predict", "seqs.fa", "-o", "p.csv"],
    ["promoter", "evaluate", "seqs.fa", "-o", "ev"],
    ["promoter", "explain", "seqs.fa", "-o", "ex"],
])  # fmt: skip
def test_promoter_commands_refuse_pickled_code(poisoned, command):
    result = CliRunner().invoke(app, [*command, "-c", str(poisoned)])
    assert result.exit_code == 1 and "model.pt" in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (poisoned.parent / "PWNED").exists()


def test_convert_esm_refuses_pickled_code_unless_allowed(poisoned, tmp_path):
    esm_like = tmp_path / "esm.pt"
    torch.save({"args": _Payload(), "model": {}}, esm_like)
    result = CliRunner().invoke(app, ["convert-esm", str(esm_like), "-o", "out.pt"])
    assert result.exit_code == 1 and "esm.pt" in result.output and "--allow-pickle" in result.output, result.output
    assert "Traceback" not in result.output
    from msaformer.errors import CheckpointError
    from msaformer.model.convert import load_fair_esm_checkpoint

    with pytest.raises(CheckpointError, match="model.pt.*--allow-pickle"):  # how --contact-regression is read too
        load_fair_esm_checkpoint(poisoned)
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out.pt").exists()
