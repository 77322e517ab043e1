"""`vislab predict`: image files through a run's model, decoded and normalized as its data set was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import vislab
from conftest import CLASSES, make_imagefolder, tiny_config
from vislab.cli import main
from vislab.deploy import Prediction, decode_images, find_images, predict_files, predict_loaded
from vislab.errors import ConfigError, DataError
from vislab.explain import checkpoint_key
from vislab.report import load_run
from vislab.rundir import CALIBRATION_FILE, find_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, data folder): a 1-epoch width-0.125 ResNet9 on the synthetic 3-class folder, whose test
    split holds PNG and JPEG files (every other file of each class re-saved as JPEG)."""
    base = tmp_path_factory.mktemp("predict")
    data = make_imagefolder(base / "data", train_per_class=16, test_per_class=4)
    for png in sorted((data / "test").rglob("*.png"))[::2]:
        Image.open(png).save(png.with_suffix(".jpg"), quality=90)
        png.unlink()
    overrides = tiny_config(
        data, base / "cache", **{"model.name": "resnet9", "trainer.epochs": 1, "sched.name": "none"}
    )
    run_dir = vislab.train("quick", overrides, out=base / "run").run_dir
    (run_dir / CALIBRATION_FILE).unlink(missing_ok=True)  # the tests below write their own
    return run_dir, data


@pytest.fixture(scope="module")
def loaded(trained):
    return load_run(trained[0], device="cpu")


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A copy of the run folder, so that a test's calibration.json does not leak into the others."""
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def _test_files(data: Path) -> list[Path]:
    # The imagefolder loader's order: classes sorted, files sorted by name within a class.
    return [f for c in sorted(CLASSES) for f in sorted((data / "test" / c).iterdir(), key=lambda p: p.name)]


def _probs(pred: Prediction) -> dict[str, float]:
    return dict(pred.predictions)


def test_predicting_the_test_folder_gives_the_runs_own_probabilities(trained, loaded):
    run_dir, data = trained
    logits, _, _ = loaded.predictions(save=False)
    want = logits.softmax(1)  # (N, C)
    results = predict_files(run_dir, [data / "test"], top_k=len(CLASSES), device="cpu")
    files = _test_files(data)
    assert {f.suffix for f in files} == {".png", ".jpg"}  # both decoders' paths are compared
    assert [r.path for r in results] == files
    for r, row in zip(results, want):
        got = _probs(r)
        assert [got[c] for c in loaded.classes] == pytest.approx(row.tolist(), abs=1e-6)
        assert r.temperature is None and r.checkpoint == loaded.checkpoint.name and r.cam is None


def test_png_files_of_test_images_and_odd_modes_predict_like_the_test_set(loaded, tmp_path):
    logits, _, _ = loaded.predictions(save=False)
    x = loaded.dataset.test_x  # (N, 3, H, W) uint8
    paths, want = [], []
    for i in range(4):
        rgb = x[i].permute(1, 2, 0).numpy()
        Image.fromarray(rgb).save(tmp_path / f"{i}.png")
        # 16-bit RGB: the decoder keeps the high byte, so value * 257 must give back the same pixels.
        cv2.imwrite(str(tmp_path / f"{i}-16bit.png"), rgb[..., ::-1].astype(np.uint16) * 257)
        paths += [tmp_path / f"{i}.png", tmp_path / f"{i}-16bit.png"]
        want += [logits[i].softmax(0).tolist()] * 2
    got = predict_loaded(loaded, paths, top_k=len(CLASSES))
    assert [r.path for r in got] == paths
    for r, row in zip(got, want):
        p = _probs(r)
        assert [p[c] for c in loaded.classes] == pytest.approx(row, abs=1e-6)
    # Palette, gray+alpha, 1-bit, 16-bit gray, CMYK JPEG and an image of another size are converted and resized.
    img = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    img.convert("P").save(tmp_path / "p.png")
    img.convert("LA").save(tmp_path / "la.png")
    img.convert("1").save(tmp_path / "one.png")
    img.convert("CMYK").save(tmp_path / "cmyk.jpg")
    img.resize((40, 24)).save(tmp_path / "big.png")
    Image.fromarray(x[0, 0].numpy().astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    odd = [tmp_path / n for n in ("p.png", "la.png", "one.png", "cmyk.jpg", "big.png", "gray16.png")]
    pixels, good, bad = decode_images(odd, loaded.dataset.image_size)
    assert bad == [] and good == odd and pixels.shape == (len(odd), 3, *loaded.dataset.image_size)
    assert len(predict_loaded(loaded, odd)) == len(odd)


def test_top_k_is_sorted_and_clamped_to_the_classes(loaded, trained):
    data = trained[1]
    files = _test_files(data)[:3]
    for r in predict_loaded(loaded, files, top_k=2):
        probs = [p for _, p in r.predictions]
        assert len(r.predictions) == 2 and probs == sorted(probs, reverse=True)
        assert r.label == r.predictions[0][0] and r.prob == probs[0]
    full = predict_loaded(loaded, files, top_k=10)  # more than the 3 classes: all of them
    assert all(len(r.predictions) == len(CLASSES) for r in full)
    assert all(sum(p for _, p in r.predictions) == pytest.approx(1.0, abs=1e-5) for r in full)
    with pytest.raises(ConfigError, match="--top-k"):
        predict_loaded(loaded, files, top_k=0)


def test_cli_table_json_and_cam(run_dir, trained, tmp_path, capsys):
    files = [str(f) for f in _test_files(trained[1])[:3]]
    assert main(["predict", str(run_dir), *files, "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# checkpoint best") and "temperature 1 (no temperature fitted" in out[0]
    assert out[1].split() == ["file", "top-1", "top-2", "top-3"]
    assert [line.split()[0] for line in out[2:]] == files

    cams = tmp_path / "cams"
    argv = ["predict", str(run_dir), *files, "--json", "--top-k", "2", "--cam", "--out", str(cams), "--device", "cpu"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)  # stdout holds only the JSON
    assert [r["path"] for r in rows] == files
    for r in rows:
        assert set(r) == {"path", "predictions", "temperature", "checkpoint", "cam"} and r["temperature"] is None
        assert [set(p) for p in r["predictions"]] == [{"class", "prob"}] * 2
        assert r["predictions"][0]["class"] in CLASSES
        with Image.open(r["cam"]) as im:
            assert im.format == "PNG" and im.size[0] > 50  # a figure, not a 16-pixel tile
    assert sorted(p.name for p in cams.iterdir()) == sorted(f"{Path(f).stem}-cam.png" for f in files)

    assert main(["predict", str(run_dir), *files, "--cam"]) == 2
    assert "--out DIR" in capsys.readouterr().err


def test_the_fitted_temperature_is_used_only_for_its_own_checkpoint(run_dir, trained, loaded, capsys):
    files = [str(f) for f in _test_files(trained[1])[:4]]
    logits = loaded.predictions(save=False)[0][:4]
    best, last = find_checkpoint(run_dir, "best"), find_checkpoint(run_dir, "last")

    def fit(ckpt: Path, value: float) -> None:
        calibration = {"temperature": {"value": value, "checkpoint_key": checkpoint_key(ckpt)}}
        (run_dir / CALIBRATION_FILE).write_text(json.dumps(calibration))

    fit(best, 2.5)
    results = predict_files(run_dir, files, top_k=len(CLASSES), device="cpu")
    want = (logits / 2.5).softmax(1)
    for r, row in zip(results, want):
        p = _probs(r)
        assert r.temperature == 2.5 and [p[c] for c in loaded.classes] == pytest.approx(row.tolist(), abs=1e-6)
    assert main(["predict", str(run_dir), *files, "--device", "cpu"]) == 0
    assert "temperature 2.5 (fitted for this checkpoint" in capsys.readouterr().out.splitlines()[0]

    fit(last, 2.5)  # fitted on another checkpoint: not this one's
    results = predict_files(run_dir, files, top_k=len(CLASSES), device="cpu")
    assert all(r.temperature is None for r in results)
    p = _probs(results[0])
    assert [p[c] for c in loaded.classes] == pytest.approx(logits[0].softmax(0).tolist(), abs=1e-6)
    assert main(["predict", str(run_dir), *files, "--json", "--device", "cpu"]) == 0
    assert all(r["temperature"] is None for r in json.loads(capsys.readouterr().out))


def test_bad_files_are_skipped_with_a_warning_or_refused_under_strict(run_dir, trained, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = _test_files(trained[1])[:2]
    for f in good:
        shutil.copy(f, folder / f.name)
    (folder / "notes.png").write_text("not an image")
    data = good[0].read_bytes() if good[0].suffix == ".png" else good[1].read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / ".hidden.png").write_text("skipped silently: hidden")
    (folder / "readme.txt").write_text("not searched: no image suffix")
    bad = ["empty.jpg", "notes.png", "truncated.png"]

    assert main(["predict", str(run_dir), str(folder), "--json", "--device", "cpu"]) == 0
    cap = capsys.readouterr()
    assert sorted(Path(r["path"]).name for r in json.loads(cap.out)) == sorted(f.name for f in good)
    assert all(str(folder / name) in cap.err for name in bad) and "skipped" in cap.err
    assert "Traceback" not in cap.err and ".hidden" not in cap.err and "readme" not in cap.err

    assert main(["predict", str(run_dir), str(folder), "--strict", "--device", "cpu"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "Traceback" not in cap.err
    error = cap.err.splitlines()[-1]  # one paragraph, after any log lines
    assert error.startswith("vislab: error: 3 of 5 files cannot be used as images.") and "--strict" in error
    assert all(str(folder / name) in error for name in bad)

    with pytest.raises(DataError, match="No image could be predicted"):
        predict_files(run_dir, [folder / n for n in bad], device="cpu")


def test_missing_paths_and_empty_folders_are_clear_errors(run_dir, tmp_path, capsys):
    assert main(["predict", str(run_dir), str(tmp_path / "nope.png")]) == 2
    err = capsys.readouterr().err
    assert "nope.png" in err and "does not exist" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(run_dir), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no image found" in err and ".png" in err
    with pytest.raises(ConfigError, match="does not exist"):
        find_images([tmp_path / "nope"])


def test_public_names():
    assert vislab.predict_files is predict_files and vislab.deploy.predict_files is predict_files
    assert {"predict_files", "export_run", "deploy"} <= set(dir(vislab))
    assert sorted(vislab.deploy.__all__) == sorted(n for n in vislab.deploy.__all__ if getattr(vislab.deploy, n))


def test_chunked_prediction_matches_and_strict_refuses_before_writing(loaded, trained, tmp_path, monkeypatch):
    from vislab.deploy import _predict

    files = _test_files(trained[1])[:5]
    whole = predict_loaded(loaded, files, top_k=len(CLASSES))
    monkeypatch.setattr(_predict, "CHUNK_FILES", 2)  # 5 files: three chunks
    chunked = predict_loaded(loaded, files, top_k=len(CLASSES))
    assert [r.path for r in chunked] == files
    assert all(_probs(a) == pytest.approx(_probs(b), abs=1e-6) for a, b in zip(chunked, whole))
    (tmp_path / "zz-bad.png").write_text("not an image")  # sorted last: in the last chunk
    cams = tmp_path / "cams"
    with pytest.raises(DataError, match="1 of 6 files"):
        predict_loaded(loaded, [*files, tmp_path / "zz-bad.png"], strict=True, cam_dir=cams)
    assert not any(cams.iterdir())  # nothing predicted or drawn before the refusal


def test_predict_and_export_need_no_data_set_once_the_run_recorded_data_json(trained, loaded, tmp_path, capsys):
    from vislab.rundir import DATA_FILE, data_info

    run_dir, data = trained
    info = json.loads((run_dir / DATA_FILE).read_text())
    assert info["classes"] == loaded.classes and info["image_size"] == list(loaded.dataset.image_size)
    assert info["mean"] == pytest.approx(list(loaded.dataset.mean))
    # The run folder alone, somewhere else, with its data folder and cache out of reach.
    moved = Path(shutil.copytree(run_dir, tmp_path / "elsewhere" / "run"))
    files = [Path(shutil.copy(f, tmp_path / f.name)) for f in _test_files(data)[:3]]
    cfg = (moved / "config.yaml").read_text().replace(str(data), str(tmp_path / "gone"))
    (moved / "config.yaml").write_text(cfg.replace(str(data.parent / "cache"), str(tmp_path / "no-cache")))
    assert data_info(moved).test_x.shape[0] == 0
    got = predict_files(moved, files, top_k=len(CLASSES), device="cpu")
    want = predict_files(run_dir, files, top_k=len(CLASSES), device="cpu")
    for g, w in zip(got, want):
        assert _probs(g) == pytest.approx(_probs(w), abs=1e-6)
    assert main(["export", str(moved), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    exported = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert "random pixels" in exported["parity"]["reference"] and exported["parity"]["max_abs_logit_diff"] < 1e-4
    assert exported["classes"] == list(CLASSES)
