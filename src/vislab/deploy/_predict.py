"""`predict`: a run's model on image files, decoded and normalized exactly as its data set was."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import IMAGE_SUFFIXES, decode_file
from ..errors import ConfigError, DataError
from ..explain import grad_cam_targets
from ..plots import overlay_heatmap, plot_image_grid
from ..report import LoadedRun, load_run
from ..rundir import data_info, read_temperature
from . import DEFAULT_TOP_K

log = logging.getLogger(__name__)

CHUNK_FILES = 1024  # files decoded and predicted at a time: bounds memory on a folder of any size
CAM_BATCH = 64  # Grad-CAM keeps a graph per batch; smaller than prediction batches
BAD_LISTED = 5  # bad files named in one error paragraph; the rest are counted


@dataclass(frozen=True)
class Prediction:
    """The model's top-k classes for one image file."""

    path: Path
    predictions: tuple[tuple[str, float], ...]  # (class, probability), most probable first
    temperature: float | None  # the fitted softmax temperature the probabilities used; None: plain softmax
    checkpoint: str  # checkpoint folder name, e.g. "best"
    cam: Path | None = None  # Grad-CAM overlay PNG of the predicted class, when asked for

    @property
    def label(self) -> str:
        return self.predictions[0][0]

    @property
    def prob(self) -> float:
        return self.predictions[0][1]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.path),
            "predictions": [{"class": c, "prob": p} for c, p in self.predictions],
            "temperature": self.temperature,
            "checkpoint": self.checkpoint,
        }
        if self.cam is not None:
            out["cam"] = str(self.cam)
        return out


def _hidden(path: Path, root: Path) -> bool:
    # macOS "._x.png" resource forks and .git-like folders hold no user images.
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """The files to predict: each file as given, and every PNG/JPEG under each folder (recursively, sorted)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ConfigError("give at least one image file or folder to predict.")
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(
                f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and not _hidden(f, p)
            )
            if not inside:
                log.warning("%s holds no %s files", p, "/".join(IMAGE_SUFFIXES))
            found += inside
        elif p.exists():
            found.append(p)
        else:
            raise ConfigError(f"PATH {str(p)!r} does not exist; give image files (PNG/JPEG) or folders holding them.")
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in found:  # a file given twice (by name and inside a folder given too) is predicted once
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    if not unique:
        raise ConfigError(
            f"no image found in {', '.join(repr(str(p)) for p in paths)}: folders are searched recursively for "
            f"{', '.join(IMAGE_SUFFIXES)} files."
        )
    return unique


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    # OpenCV prints its own line ("PNG input buffer is incomplete") for a damaged file; ours names the file.
    import cv2

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def decode_images(files: Sequence[Path], size: tuple[int, int]) -> tuple[Tensor, list[Path], list[tuple[Path, str]]]:
    """(uint8 (N, 3, H, W) of the files that decode, those files, (file, reason) of the others).

    Grayscale, palette, RGBA, 16-bit and CMYK files are converted to RGB and resized as the data sets are
    (vislab.data.decode_file): a file is bad only when it cannot be decoded at all.
    """
    images: list[np.ndarray] = []
    good: list[Path] = []
    bad: list[tuple[Path, str]] = []
    with _quiet_opencv():
        for f in files:
            try:
                images.append(decode_file(f, size))
            except DataError as e:
                bad.append((f, str(e)))
                continue
            except Exception as e:  # noqa: BLE001 - whatever a decoder raises, the file is unusable, not the run
                bad.append((f, f"cannot decode {f}: {type(e).__name__}: {e}"))
                continue
            good.append(f)
    x = torch.from_numpy(np.stack(images)) if images else torch.zeros(0, 3, *size, dtype=torch.uint8)
    return x, good, bad


def _bad_paragraph(bad: list[tuple[Path, str]], total: int) -> str:
    reasons = [r[:1].upper() + r[1:] + ("" if r.endswith(".") else ".") for _, r in bad[:BAD_LISTED]]
    more = f" And {len(bad) - BAD_LISTED} more." if len(bad) > BAD_LISTED else ""
    return f"{len(bad)} of {total} files cannot be used as images. {' '.join(reasons)}{more}"


def _strict_paragraph(bad: list[tuple[Path, str]], total: int) -> str:
    return f"{_bad_paragraph(bad, total)} --strict refuses them; without it they are skipped with a warning."


def _cam_name(path: Path, used: set[str]) -> str:
    name, i = f"{path.stem}-cam.png", 1
    while name in used:  # same file name in two folders
        i += 1
        name = f"{path.stem}-cam-{i}.png"
    used.add(name)
    return name


def _write_cams(
    run: LoadedRun,
    x: Tensor,
    files: list[Path],
    preds: Tensor,
    probs: Tensor,
    out: Path,
    layer: str | None,
    used: set[str],
) -> list[Path]:
    """One PNG per image: the image (as the model saw it, resized) beside its Grad-CAM for the predicted class."""
    paths = []
    for i in range(0, x.shape[0], CAM_BATCH):
        xb = x[i : i + CAM_BATCH]
        res = grad_cam_targets(
            run.model, run.normalize(xb.to(run.device)), {"p": preds[i : i + CAM_BATCH].to(run.device)}, layer=layer
        )
        grid = f"{res.grid[0]}x{res.grid[1]}"  # the map's native resolution, so a 4x4 map is not read as a fine one
        overlays = overlay_heatmap(xb, res.maps["p"].cpu())  # (n, 3, H, W) uint8
        for j in range(xb.shape[0]):
            k = i + j
            cls = run.classes[int(preds[k])]
            fig = plot_image_grid(
                torch.stack([xb[j], overlays[j]]),
                [files[k].name, f"Grad-CAM ({grid}): {cls}\np={float(probs[k]):.2f}"],
                ncols=2,
                colorbar=f"Grad-CAM at its native {grid} grid, upsampled / the map's own maximum",
            )
            path = out / _cam_name(files[k], used)
            fig.savefig(path, format="png", dpi=fig.dpi)
            paths.append(path)
    return paths


def predict_loaded(
    run: LoadedRun,
    paths: Sequence[str | Path],
    *,
    top_k: int = DEFAULT_TOP_K,
    strict: bool = False,
    cam_dir: str | Path | None = None,
    layer: str | None = None,
) -> list[Prediction]:
    """predict_files with a run already loaded (a notebook predicting several times loads it once)."""
    _check_top_k(top_k)
    return _predict(run, find_images(paths), top_k=top_k, strict=strict, cam_dir=cam_dir, layer=layer)


def _predict(
    run: LoadedRun,
    files: list[Path],
    *,
    top_k: int,
    strict: bool,
    cam_dir: str | Path | None,
    layer: str | None,
) -> list[Prediction]:
    temperature = read_temperature(run.folder.run_dir, run.checkpoint, run.weights)
    k = min(top_k, len(run.classes))
    size = run.dataset.image_size  # (H, W)
    cam_out = Path(cam_dir) if cam_dir is not None else None
    if cam_out is not None:
        if cam_out.exists() and not cam_out.is_dir():
            raise ConfigError(f"--out {str(cam_out)!r} is a file; give a folder for the Grad-CAM overlays.")
        cam_out.mkdir(parents=True, exist_ok=True)
    chunks = [files[lo : lo + CHUNK_FILES] for lo in range(0, len(files), CHUNK_FILES)]
    if strict and len(chunks) > 1:
        # Refuse before anything is predicted or written; one chunk is checked by the loop below before its use.
        bad = [b for chunk in chunks for b in decode_images(chunk, size)[2]]
        if bad:
            raise DataError(_strict_paragraph(bad, len(files)))
    used: set[str] = set()
    results: list[Prediction] = []
    all_bad: list[tuple[Path, str]] = []
    for chunk in chunks:
        x, good, bad = decode_images(chunk, size)
        all_bad += bad
        if strict and all_bad:
            break  # refused below; no point predicting the rest
        if not good:
            continue
        logits = run.predict(x)  # (n, C) float32, as the run's test set is predicted
        probs = (logits / temperature if temperature is not None else logits).softmax(1)
        top_p, top_i = probs.topk(k, dim=1)  # (n, k), most probable first
        cams: list[Path | None] = [None] * len(good)
        if cam_out is not None:
            cams = list(_write_cams(run, x, good, top_i[:, 0], top_p[:, 0], cam_out, layer, used))
        for f, p, i, cam in zip(good, top_p.tolist(), top_i.tolist(), cams):
            results.append(
                Prediction(
                    path=f,
                    predictions=tuple((run.classes[c], float(q)) for c, q in zip(i, p)),
                    temperature=temperature,
                    checkpoint=run.checkpoint.name,
                    cam=cam,
                )
            )
    if all_bad and strict:
        raise DataError(_strict_paragraph(all_bad, len(files)))
    for _, reason in all_bad:
        log.warning("skipped a file: %s", reason)  # the reason names the file
    if not results:
        raise DataError(f"No image could be predicted: {_bad_paragraph(all_bad, len(files))}")
    return results


def _check_top_k(top_k: int) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k = {top_k!r}: give the number of classes to show per image, a whole number >= 1.")


def predict_files(
    run_dir: str | Path,
    paths: Sequence[str | Path],
    *,
    top_k: int = DEFAULT_TOP_K,
    checkpoint: str | Path | None = None,
    device: str | None = None,
    data_root: str | Path | None = None,
    strict: bool = False,
    cam_dir: str | Path | None = None,
    layer: str | None = None,
) -> list[Prediction]:
    """The top-k classes of each image file (folders are searched recursively for PNG/JPEG files, sorted).

    Images are converted to RGB, resized to the run's image size as its data set was and normalized with its
    mean/std; logits are divided by the temperature fitted for this checkpoint (calibration.json) when there
    is one. Files that cannot be decoded are skipped with a warning, or refused (DataError) with `strict`.
    `cam_dir` writes a Grad-CAM overlay of the predicted class per image there. The class names, image size and
    training mean/std come from the run's data.json; a run from before it (or an explicit `data_root`) loads its
    data set instead.
    """
    _check_top_k(top_k)
    files = find_images(paths)  # a missing PATH is reported before the model and the data load
    run = load_run(
        run_dir,
        checkpoint=checkpoint,
        device=device or "auto",
        data_root=data_root,
        dataset=None if data_root is not None else data_info(run_dir),
    )
    return _predict(run, files, top_k=top_k, strict=strict, cam_dir=cam_dir, layer=layer)


def format_table(results: Sequence[Prediction]) -> str:
    """One line per file: the path, then each top-k class with its probability."""
    width = max(len(str(r.path)) for r in results)
    cells = [[f"{c} {p:.3f}" for c, p in r.predictions] for r in results]
    col = max(len(c) for row in cells for c in row)
    k = max(len(row) for row in cells)
    head = "  ".join(["file".ljust(width), *(f"top-{i + 1}".ljust(col) for i in range(k))]).rstrip()
    lines = [head]
    for r, row in zip(results, cells):
        lines.append("  ".join([str(r.path).ljust(width), *(c.ljust(col) for c in row)]).rstrip())
    return "\n".join(lines)


def describe_temperature(temperature: float | None) -> str:
    if temperature is None:
        return "temperature 1 (no temperature fitted for this checkpoint: plain softmax)"
    return f"temperature {temperature:.4g} (fitted for this checkpoint, calibration.json)"
