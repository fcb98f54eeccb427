"""The command line's contract (msaformer.cli._app): clean help, one-line errors with exit 1, outputs left
intact by failed or interrupted runs, third-party noise kept off stdout, CSVs with \\n line ends."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from msaformer.cli.main import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _commands(group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        path = (*prefix, name)
        if hasattr(cmd, "commands"):
            yield path
            yield from _commands(cmd, path)
        else:
            yield path


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_listed():
    names = {" ".join(c) for c in COMMANDS}
    assert {"demo", "preprocess", "inspect", "verify", "export", "convert-esm", "train", "export-weights", "embed",
            "contacts", "contacts predict", "contacts evaluate", "contacts fit", "evaluate", "search", "score-variants",
            "promoter", "promoter train", "promoter predict", "promoter explain",
            "promoter evaluate"} <= names  # fmt: skip


@pytest.mark.parametrize("command", [()] + COMMANDS, ids=lambda c: " ".join(c) or "msaformer")
def test_help_is_clean(command):
    for flag in ("--help", "-h"):
        result = runner.invoke(app, [*command, flag], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        text = result.output
        for bad in ("<bool>", "<int>", "<float>", "<str>", "<path>", "<list", "{", "<Path>"):
            assert bad not in text, f"{' '.join(command)} --help shows {bad!r}"
        assert "-h, --help" in text or ("--help" in text and "-h" in text)


def test_enumerated_options_show_their_choices():
    checks = {("preprocess",): ["[fail|skip]", "[gzip|none]"],
              ("embed",): ["[fail|skip]", "[auto|cpu|cuda]", "[auto|bf16|fp32]", "[first|random|greedy_diverse"],
              ("convert-esm",): ["[real_rows|fair_esm]"],
              ("promoter", "predict"): ["[max|mean]"]}  # fmt: skip
    for command, choices in checks.items():
        text = " ".join(runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"}).output.split())
        for choice in choices:
            assert choice in text, (command, choice)


def test_no_arguments_shows_help_and_exits_0():
    for command in ([], ["preprocess"], ["promoter"], ["promoter", "predict"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0 and "Usage: msaformer" in result.output, command


@pytest.mark.parametrize(
    "args,expected",
    [
        (["preprocess", "x.a3m"], "Missing option '--out'"),
        (["preprocess", "x.a3m", "--out", "o", "--on-error", "maybe"], "'--on-error': 'maybe' is not one of"),
        (["preprocess", "x.a3m", "--out", "o", "--workers", "two"], "--workers"),
        (["embed", "x.a3m", "-c", "m.pt", "-o", "o.h5", "--subsample", "best"], "'--subsample': 'best'"),
        (["embed", "x.a3m", "-c", "m.pt", "-o", "o.h5", "--frobnicate"], "No such option: --frobnicate"),
        (["promoter", "predict", "x.fa", "--checkpoint", "m.pt", "-o", "o.csv", "--aggregate", "median"],
         "'--aggregate': 'median'"),
        (["promoter", "train", "--seed", "1"], "Missing option '--config'"),
        (["nope"], "No such command 'nope'"),
        (["preprocess", "no/such/input.a3m", "--out", "o"], "input not found: no/such/input.a3m"),
    ],
)
def test_user_mistakes_are_one_line_with_exit_1(args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output and "╭" not in result.output


def test_unreadable_config_files_are_one_line(tmp_path):
    png = tmp_path / "some.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    for command in (["train", "--config", png], ["promoter", "train", "--config", png]):
        result = invoke(*command)
        assert result.exit_code == 1 and result.output.strip().count("\n") == 0, result.output
        assert "some.png is not a text file" in result.output
    missing = invoke("train", "--config", tmp_path / "nope.yaml")
    assert missing.exit_code == 1 and "config file not found" in missing.output


def test_version_and_module_entry():
    for argv in ([sys.executable, "-m", "msaformer", "--version"], [sys.executable, "-m", "msaformer.cli.main", "-h"]):
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "msaformer", "--version"], capture_output=True, text=True)
    from msaformer import __version__

    assert done.stdout.strip() == f"msaformer {__version__}"
    bad = subprocess.run([sys.executable, "-m", "msaformer", "inspect", "/no/such/dir"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == "" and bad.stderr.count("\n") == 1


# -------------------------------------------------------------------- outputs intact after failures


@pytest.fixture(scope="module")
def promoter_model(tmp_path_factory):
    import torch

    from msaformer.model.promoter import PromoterClassifier, PromoterModelConfig, save_promoter_model

    torch.manual_seed(0)
    model = PromoterClassifier(PromoterModelConfig(embed_dim=16, num_heads=2, ffn_dim=16, num_layers=1, max_length=20))
    return save_promoter_model(model, tmp_path_factory.mktemp("promoter") / "model.pt")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_promoter_outputs_survive_every_failure(promoter_model, tmp_path, monkeypatch):
    good = tmp_path / "good.fa"
    good.write_text(">a\nACGTACGTAC\n>b\nTTTTGGGGCCCCAAAA\n")
    out, explained, evaluated = tmp_path / "preds.csv", tmp_path / "explain", tmp_path / "eval"
    assert invoke("promoter", "predict", good, "-c", promoter_model, "-o", out, "-q").exit_code == 0
    assert invoke("promoter", "explain", good, "-c", promoter_model, "-o", explained, "-q").exit_code == 0
    labelled = tmp_path / "lab.fa"
    labelled.write_text(">a label=1\nACGTACGTAC\n>b label=0\nTTTTGGGGCC\n")
    assert invoke("promoter", "evaluate", labelled, "-c", promoter_model, "-o", evaluated).exit_code == 0
    before = _snapshot(tmp_path)
    assert "\r" not in out.read_text() and out.read_text().startswith("id,length,n_windows,probability,label\n")

    bad_char = tmp_path / "bad.fa"
    bad_char.write_text(">a\nACGTACGTAC\n>b\nACG@T\n")
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    cases = [bad_char, empty, tmp_path / "missing.fa"]
    for source in cases:
        for command in (["predict", source, "-c", promoter_model, "-o", out, "-q"],
                        ["explain", source, "-c", promoter_model, "-o", explained, "-q"],
                        ["evaluate", source, "-c", promoter_model, "-o", evaluated]):  # fmt: skip
            result = invoke("promoter", *command)
            assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    # Ctrl-C in the middle of scoring
    import msaformer.infer.promoter as ip

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ip, "promoter_probabilities", interrupted)
    monkeypatch.setattr(ip, "explain_tokens", interrupted)
    for command in (["predict", good, "-c", promoter_model, "-o", out, "-q"],
                    ["explain", good, "-c", promoter_model, "-o", explained, "-q"],
                    ["evaluate", labelled, "-c", promoter_model, "-o", evaluated]):  # fmt: skip
        result = invoke("promoter", *command)
        assert result.exit_code == 130 and "interrupted" in result.output
    after = _snapshot(tmp_path)
    for name in ("bad.fa", "empty.fa"):
        after.pop(name)
    assert after == before  # every earlier output byte-identical, and no temporary file left anywhere


def test_third_party_noise_stays_off_stdout(tmp_path, capfd, monkeypatch):
    """DeepSpeed's logger writes to stdout and its checkpoint tools print and draw tqdm bars: msaformer keeps all
    of it off stdout (which is for data) and shows it on stderr only with --verbose."""
    from msaformer.progress import VERBOSE_ENV
    from msaformer.train.distributed import import_deepspeed, quiet_third_party

    def noisy():
        print("Processing zero checkpoint")
        print("Loading checkpoint shards: 100%", file=sys.stderr)

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    with quiet_third_party():
        noisy()
    assert capfd.readouterr() == ("", "")
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with quiet_third_party():
        noisy()
    out, err = capfd.readouterr()
    assert out == "" and "Processing zero checkpoint" in err and "Loading checkpoint shards" in err
    import logging

    deepspeed = import_deepspeed()
    from deepspeed.utils import logger

    assert all(getattr(h, "stream", None) is not sys.stdout for h in logger.handlers)
    logger.warning("a DeepSpeed warning")
    assert "a DeepSpeed warning" not in capfd.readouterr().out
    assert deepspeed is sys.modules["deepspeed"] and logger.level in (logging.INFO, logging.ERROR)
    # a whole command: nothing on stdout
    code = "import sys; from msaformer.cli.main import main; main(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-c", code, "export-weights", str(tmp_path), "-o", str(tmp_path / "m.pt")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1 and done.stdout == "" and done.stderr.count("\n") == 1


def test_csv_outputs_use_newline_line_ends(tmp_path):
    from msaformer.files import csv_text, write_csv

    write_csv(tmp_path / "x.csv", ["a", "b"], [[1, "x,y"], [2, 'q"']])
    assert b"\r" not in (tmp_path / "x.csv").read_bytes()
    assert csv_text(["a"], [[1]]) == "a\n1\n"
    sources = [p for p in (REPO / "msaformer").rglob("*.py")]
    for path in sources:  # every csv writer in the package goes through msaformer.files (lineterminator "\n")
        text = path.read_text()
        for match in re.finditer(r"csv\.(writer|DictWriter)\(([^)]*)\)", text):
            assert "lineterminator" in match.group(2) or path.name == "files.py", f"{path.name}: {match.group(0)}"


def test_a_folder_build_removes_what_a_killed_build_of_it_left(tmp_path):
    """kill -9 during a folder build leaves `.NAME.tmp-PID`; the next build of NAME removes it, but never the
    temporary folder of a build that is still running."""
    import signal

    from msaformer.files import AtomicDir

    final = tmp_path / "run"
    build = ("import sys, time; from msaformer.files import AtomicDir; d = AtomicDir(sys.argv[1]); "
             "open(d.path('part'), 'w').write('x'); print(d.tmp, flush=True); time.sleep(120)")
    procs = [subprocess.Popen([sys.executable, "-c", build, str(final)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        killed, running = (Path(p.stdout.readline().strip()) for p in procs)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        assert killed.is_dir() and running.is_dir()
        folder = AtomicDir(final)
        folder.path("part").write_text("y")
        folder.commit()
        assert not killed.exists() and running.is_dir() and (final / "part").read_text() == "y"
    finally:
        for p in procs:
            p.kill()
            p.wait()
