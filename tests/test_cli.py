"""CLI: commands, help, and bad input as one paragraph with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vislab
from vislab.cli import main


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislab", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_version_and_help():
    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"vislab {vislab.__version__}"
    for cmd in ("train", "recipes", "summary"):
        r = _run(cmd, "--help")
        assert r.returncode == 0 and "usage: vislab " + cmd in r.stdout


def test_recipes_lists_every_recipe(capsys):
    assert main(["recipes", "-v"]) == 0
    out = capsys.readouterr().out
    for name in vislab.list_recipes():
        assert name in out
    assert "quick (default)" in out and "course's figure: 90.63%" in out


# vislab's own output (argparse's --help and --version already ignore a closed pipe).
@pytest.mark.parametrize("args", [["recipes", "-v"], ["recipes"], ["summary", "resnet18"]])
def test_output_into_a_closed_pipe_ends_quietly(args):
    # As `vislab ... | head -1` once head has gone: the read end is closed before vislab writes a byte.
    p = subprocess.Popen([sys.executable, "-m", "vislab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as the shell reports for a Unix tool cut off by head
    assert err == ""


def test_piped_into_head_prints_the_first_line_only():
    r = subprocess.run(
        f"{sys.executable} -m vislab recipes -v | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert r.stdout.splitlines() == ["quick (default)"] and r.stderr == ""


def test_summary_prints_parameter_count(capsys):
    assert main(["summary", "resnet18"]) == 0
    assert "11,173,962" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "trainer.epochs=0"], "trainer.epochs"),
        (["--set", "optim.nme=sgd"], "optim.nme"),
        (["--set", "model.name=vgg"], "model.name"),
        (["no-such-recipe"], "no-such-recipe"),
        (["--set", "data.name=imagefolder", "--set", "data.root=/does/not/exist"], "/does/not/exist"),
    ],
)
def test_bad_input_exits_2_with_one_paragraph(tmp_path, args, needle):
    r = _run("train", *args, "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_train_cli_end_to_end(tiny_overrides, tmp_path):
    sets = [a for k, v in tiny_overrides.items() for a in ("--set", f"{k}={v}")]
    r = _run("train", "quick", *sets, "--set", "trainer.epochs=1", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(tmp_path / "r")
    assert "epoch 1/1" in r.stderr
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs_completed"] == 1


def test_resume_of_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "config.yaml" in capsys.readouterr().err
