"""Reliability: kills at any moment, signals, tampered checkpoints, bad-input corpus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import vislab
from vislab.cli import main
from vislab.engine import Callback, load_checkpoint
from vislab.errors import VislabError

CORPUS = Path(__file__).parent / "corpus" / "configs"

# Runs vislab.train in a child process that kills or signals itself at a chosen point; the
# patches are test-side fault injection, the product code has no hooks for it.
CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import vislab
    from vislab.cli import main
    from vislab.engine import checkpoint, hooks

    point, n, overrides, out = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    calls = {"n": 0}

    def hit():
        calls["n"] += 1
        return calls["n"] == n

    if point in ("kill-step", "sigint-step", "sigterm-step"):
        sig = {"kill-step": signal.SIGKILL, "sigint-step": signal.SIGINT, "sigterm-step": signal.SIGTERM}[point]
        orig = hooks.LRMonitor.on_batch_end
        def on_batch_end(self, trainer, i, loss):
            orig(self, trainer, i, loss)
            if trainer.global_step == n:
                os.kill(os.getpid(), sig)
        hooks.LRMonitor.on_batch_end = on_batch_end
    elif point == "kill-between-renames":  # old checkpoint moved aside, new one not yet in place
        orig_replace = os.replace
        def replace(a, b):
            orig_replace(a, b)
            if str(b).endswith(".old") and hit():
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.os.replace = replace
    elif point == "kill-in-checkpoint-write":  # temp folder complete, nothing renamed yet
        orig_fsync_dir = checkpoint._fsync_dir
        def fsync_dir(path):
            orig_fsync_dir(path)
            if ".tmp" in str(path) and hit():
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint._fsync_dir = fsync_dir
    elif point == "kill-in-metrics-write":  # metrics temp file written, not renamed
        from vislab import files

        orig_write = files.atomic_write_text
        def atomic_write_text(path, text):
            if str(path).endswith("metrics.jsonl") and hit():
                open(str(path) + ".partial", "w").write(text[: len(text) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            orig_write(path, text)
        files.atomic_write_text = atomic_write_text  # write_jsonl looks it up in vislab.files
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    sys.exit(main(["train", "quick", *sets, "--out", out]))
    """
)


def _child(tmp_path: Path, point: str, n: int, overrides: dict, out: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.run(
        [sys.executable, str(script), point, str(n), json.dumps(overrides), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _resume_child(out: Path) -> subprocess.CompletedProcess:
    """`vislab train --resume OUT` in a fresh process, as after a kill."""
    return subprocess.run(
        [sys.executable, "-m", "vislab", "train", "--resume", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _error_paragraph(err: str) -> str:
    """The CLI's error: exactly one line starting with 'vislab:' (log lines may precede it), no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("vislab:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last")["model"]


@pytest.fixture
def det_overrides(tiny_overrides):
    # 72 images / batch 16 = 4 steps per epoch, 3 epochs; deterministic CPU for exact comparison.
    return {
        **tiny_overrides,
        "trainer.epochs": 3,
        "trainer.deterministic": True,
        "augment.rotate_deg": 5,
        "augment.cutout_size": 4,
    }


@pytest.fixture
def reference(det_overrides, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as the children, for bitwise-equal float sums
    try:
        run = vislab.train("quick", det_overrides, out=tmp_path / "reference")
    finally:
        torch.set_num_threads(threads)
    return run.run_dir


# (point, n): SIGKILL during a step of epoch 1 (no checkpoint yet) and of epoch 2; inside the
# 2nd and 3rd checkpoint writes; between the renames of a checkpoint swap; during the 2nd metrics write.
KILL_POINTS = [
    ("kill-step", 2),
    ("kill-step", 6),
    ("kill-in-checkpoint-write", 2),
    ("kill-in-checkpoint-write", 3),
    ("kill-between-renames", 1),
    ("kill-in-metrics-write", 2),
]


@pytest.mark.parametrize("point,n", KILL_POINTS)
def test_sigkill_then_resume_matches_uninterrupted(point, n, det_overrides, reference, tmp_path):
    out = tmp_path / "killed"
    r = _child(tmp_path, point, n, det_overrides, out)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    # Whatever was on disk at the kill parses: metrics rows and (if any) the last checkpoint.
    if (out / "metrics.jsonl").exists():
        assert all(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    r = _resume_child(out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _rows(out) == _rows(reference)
    a, b = _weights(out), _weights(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("point,code", [("sigint-step", 130), ("sigterm-step", 143)])
def test_signal_stops_after_step_saves_and_resumes(point, code, det_overrides, reference, tmp_path):
    out = tmp_path / "sig"
    ov = {**det_overrides, "trainer.report": point == "sigint-step"}
    r = _child(tmp_path, point, 6, ov, out)  # step 6 = 2nd step of epoch 2
    assert r.returncode == code, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and f"--resume {out}" in r.stderr
    assert len(_rows(out)) == 1  # epoch 1 complete, epoch 2 interrupted
    interrupted = load_checkpoint(out / "checkpoints" / "interrupted")
    assert interrupted["global_step"] == 6
    assert json.loads((out / "summary.json").read_text())["status"] == "interrupted"
    if point == "sigint-step":
        assert (out / "report.html").is_file()
    r = _resume_child(out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _rows(out) == _rows(reference)


@pytest.fixture
def finished_run(tiny_overrides, tmp_path):
    return vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1}, out=tmp_path / "run").run_dir


def test_tampered_or_truncated_checkpoint_is_refused(finished_run, capsys):
    ckpt = finished_run / "checkpoints" / "last"
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (ckpt / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(VislabError, match="refused.*checksum"):
        load_checkpoint(ckpt)
    assert main(["train", "--resume", str(finished_run)]) == 2
    assert "refused" in _error_paragraph(capsys.readouterr().err)
    state = finished_run / "checkpoints" / "best" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(VislabError, match="refused"):
        load_checkpoint(finished_run / "checkpoints" / "best")


def test_checkpoint_with_pickled_code_never_runs_it(finished_run, tmp_path):
    import hashlib
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = finished_run / "checkpoints" / "last"
    (ckpt / "state.pt").write_bytes(pickle.dumps({"epoch": Evil()}))
    sums = json.loads((ckpt / "checksums.json").read_text())
    sums["state.pt"] = hashlib.sha256((ckpt / "state.pt").read_bytes()).hexdigest()  # a consistent forgery
    (ckpt / "checksums.json").write_text(json.dumps(sums))
    with pytest.raises(VislabError, match="refused"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_nan_loss_names_epoch_step_and_lr(tiny_overrides, tmp_path):
    ov = {
        **tiny_overrides,
        "sched.name": "none",
        "optim.lr": 1e12,
        "optim.momentum": 0.0,
        "optim.nesterov": False,
        "trainer.epochs": 2,
        "model.norm": "group",
        "model.groups": 1,
    }
    with pytest.raises(vislab.VislabError, match=r"epoch 1 at step \d+ .*learning rate 1e\+12.*optim.grad_clip"):
        vislab.train("quick", ov, out=tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()  # nothing non-finite was saved


class _OverflowingLR(Callback):
    """From epoch 2 on, an infinite LR: its update overflows, as a far too large LR does in float32. The
    loss of a step is computed before its update, so with one step per epoch every loss stays finite
    and only the weights break."""

    def on_epoch_end(self, trainer, row):
        for group in trainer.optimizer.param_groups:
            group["lr"] = float("inf")


def test_nonfinite_weights_are_never_checkpointed(tiny_overrides, tmp_path):
    from vislab.engine.trainer import TrainingDiverged

    out = tmp_path / "run"
    ov = {**tiny_overrides, "trainer.batch_size": 72, "trainer.epochs": 3, "sched.name": "none", "optim.lr": 0.01}
    with pytest.raises(
        TrainingDiverged,
        match=r"epoch 2: .*weight tensor\(s\) hold NaN or infinite values .*although every loss was finite",
    ):
        vislab.train("quick", ov, out=out, callbacks=[_OverflowingLR()])
    last = load_checkpoint(out / "checkpoints" / "last")
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # no row for the broken epoch

    # save_checkpoint itself refuses such weights and leaves the checkpoint already there in place.
    from vislab.engine import save_checkpoint

    before = (out / "checkpoints" / "last" / "model.safetensors").read_bytes()
    last["model"]["fc.weight"][0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="not written.*fc.weight.*already there is kept"):
        save_checkpoint(out / "checkpoints" / "last", last)
    assert (out / "checkpoints" / "last" / "model.safetensors").read_bytes() == before
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] == []


def test_out_of_memory_names_batch_size(tiny_overrides, tmp_path, monkeypatch):
    from vislab.engine import trainer as trainer_mod

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_mod, "train_one_epoch", oom)
    with pytest.raises(VislabError, match="Out of CPU memory in epoch 1.*trainer.batch_size = 16.*to 8"):
        vislab.train("quick", tiny_overrides, out=tmp_path / "run")


def _corpus_args(path: Path, imagefolder: Path, cache: Path) -> list[str]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raw = None
    sets = ["--set", f"data.root={imagefolder}", "--set", f"data.cache_dir={cache}", "--set", "trainer.report=false"]
    if not (isinstance(raw, dict) and isinstance(raw.get("data"), dict) and "name" in raw["data"]):
        sets += ["--set", "data.name=imagefolder"]
    return [str(path), *sets]


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_config_corpus(path, imagefolder, tmp_path, capsys, monkeypatch):
    if path.stem == "cuda-without-gpu" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    expect = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
    out = tmp_path / "run"
    assert main(["train", *_corpus_args(path, imagefolder, tmp_path / "cache"), "--out", str(out)]) == 2
    assert expect in _error_paragraph(capsys.readouterr().err)
    assert not out.exists() and not (tmp_path / "runs").exists()


def _break_data(kind: str, root: Path) -> str:
    """Damage a copy of the synthetic image folder; returns what the error must name."""
    from PIL import Image

    victim = root / "train" / "beta" / "0003.png"
    if kind == "empty-class-folder":
        (root / "train" / "delta").mkdir()
        (root / "test" / "delta").mkdir()
        return "delta"
    if kind == "non-image-file":
        victim.write_text("hello, I am not a picture")
        return "0003.png"
    if kind == "other-size":
        Image.new("RGB", (20, 20)).save(victim)
        return "0003.png"
    if kind == "truncated-jpeg":
        jpg = root / "train" / "beta" / "0099.jpg"
        Image.new("RGB", (16, 16), (200, 10, 10)).save(jpg, quality=90)
        jpg.write_bytes(jpg.read_bytes()[:60])
        return "0099.jpg"
    if kind == "grayscale-image":
        Image.new("L", (16, 16)).save(victim)
        return "0003.png"
    if kind == "missing-root":
        shutil.rmtree(root)
        return str(root)
    if kind == "missing-test-split":
        shutil.rmtree(root / "test")
        return "test"
    raise ValueError(kind)


DATA_CASES = [
    "empty-class-folder",
    "non-image-file",
    "other-size",
    "truncated-jpeg",
    "grayscale-image",
    "missing-root",
    "missing-test-split",
]


@pytest.mark.parametrize("kind", DATA_CASES)
def test_bad_data_corpus(kind, imagefolder, tmp_path, capsys):
    needle = _break_data(kind, imagefolder)
    out = tmp_path / "run"
    args = [
        "train",
        "--set",
        "data.name=imagefolder",
        "--set",
        f"data.root={imagefolder}",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--out",
        str(out),
    ]
    assert main(args) == 2
    assert needle in _error_paragraph(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["out-under-a-file", "out-is-a-file"])
def test_unwritable_output_folder(kind, tiny_overrides, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = blocker / "run" if kind == "out-under-a-file" else blocker
    sets = [a for k, v in tiny_overrides.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", *sets, "--out", str(out)]) == 2
    assert "blocker" in _error_paragraph(capsys.readouterr().err)
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize(
    "override", ["trainer.epochs=5", "model.width=0.5", "optim.name=adam", "trainer.checkpoint_metric=test_loss"]
)
def test_resume_refuses_overrides_the_checkpoint_cannot_honour(finished_run, override, capsys):
    before = (finished_run / "config.yaml").read_text()
    assert main(["train", "--resume", str(finished_run), "--set", override]) == 2
    assert override.split("=")[0] in _error_paragraph(capsys.readouterr().err)
    assert (finished_run / "config.yaml").read_text() == before  # nothing rewritten


def test_resume_of_broken_config_and_non_text_recipe(finished_run, tmp_path, capsys):
    (finished_run / "config.yaml").write_text("trainer: [\n")
    assert main(["train", "--resume", str(finished_run)]) == 2
    assert "not valid YAML" in _error_paragraph(capsys.readouterr().err)
    (finished_run / "config.yaml").write_text("- a\n- b\n")
    assert main(["train", "--resume", str(finished_run)]) == 2
    assert "mapping" in _error_paragraph(capsys.readouterr().err)
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(128, 256)))
    assert main(["train", str(binary)]) == 2
    assert "UTF-8" in _error_paragraph(capsys.readouterr().err)


def test_run_files_are_readable_by_others(finished_run):
    mask = os.umask(0)
    os.umask(mask)
    for path in (finished_run / "metrics.jsonl", finished_run / "config.yaml", finished_run / "checkpoints" / "last"):
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~mask, path
