"""The `report`, `explain`, `robust` and `compare` subcommands, registered into the `vislab` parser by cli.py."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

# Copies of vislab.explain.ORDERS / TARGETS (a test keeps them equal): importing vislab.explain here would
# pull in torch while the parser is built, and `vislab --version` should stay instant.
ORDERS = ("loss", "confidence", "random")
TARGETS = ("predicted", "actual", "both")
# vislab.explain.CAM_METHODS, for the same reason (tests/test_cam_sweep.py keeps them equal).
CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam")
# vislab.augment.CORRUPTIONS' names, for the help text (tests/test_robust.py keeps them equal).
CORRUPTION_NAMES = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "defocus_blur",
    "contrast",
    "brightness",
    "saturate",
    "jpeg_compression",
    "pixelate",
)


def _add_run_options(p: argparse.ArgumentParser, n_help: str) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder of a `vislab train` run (finished or interrupted)")
    p.add_argument("--n", type=int, default=20, help=n_help)
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="loss",
        help="gallery order: loss (top losses), confidence, random (default loss)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random order, samples and masks (default 0)")
    p.add_argument(
        "--layer",
        metavar="NAME",
        help="CAM layer, a dotted module name (default: the most faithful layer of a `vislab explain --sweep`, else "
        "the model's registered layer)",
    )
    p.add_argument(
        "--method",
        choices=CAM_METHODS,
        help="CAM method (default: the most faithful method of a `vislab explain --sweep`, else gradcam)",
    )
    _add_load_options(p, "explain")


def _add_load_options(p: argparse.ArgumentParser, verb: str) -> None:
    """How the run's model and data are loaded: checkpoint, weights, device, data root."""
    p.add_argument(
        "--checkpoint",
        metavar="best|last|interrupted|PATH",
        help=f"checkpoint to {verb}: best, last, interrupted (of a stopped run) or a path (default: best, else last)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(
        "--data-root", metavar="DIR", help="data folder, when the run's data.root does not resolve from here"
    )
    p.add_argument(
        "--weights",
        choices=("raw", "ema"),
        help="the trained weights or, for a run with trainer.ema_decay, their moving average (default: ema when the "
        "run picked its best epoch by an ema_* metric, else raw)",
    )


def _check_n(n: int, least: int, allowed: str, flag: str = "--n") -> None:
    # Before the data and the model are loaded: a typo should not cost the minutes those take.
    from ..errors import ConfigError

    if n < least:
        raise ConfigError(f"{flag} = {n}: {allowed}.")


@contextmanager
def _naming_data_root(args: argparse.Namespace) -> Iterator[None]:
    """A run trained from another working folder keeps a data.root that does not resolve from here; the data
    error then names the --data-root flag that points these commands at the data."""
    from pathlib import Path

    from ..errors import DataError

    try:
        yield
    except DataError as e:
        if args.data_root is not None:
            raise
        from ..rundir import read_run

        root = read_run(args.run_dir).config.data.root
        if root is None or Path(root).is_dir():
            raise
        raise DataError(
            f"{e} The run was trained with data.root = {root!r}, which does not exist from {str(Path.cwd())!r}: "
            f"give the data's folder with --data-root DIR (`vislab {args.command} {args.run_dir} --data-root DIR`)."
        ) from None


def _cmd_report(args: argparse.Namespace) -> int:
    from ..env import setup_logging
    from ._report import make_report

    _check_n(args.n, 0, "give the number of misclassified images in the gallery, a whole number >= 0 (0: no gallery)")
    setup_logging()
    with _naming_data_root(args):
        rep = make_report(
            args.run_dir,
            n=args.n,
            order=args.order,
            target=args.target,
            layer=args.layer,
            seed=args.seed,
            checkpoint=args.checkpoint,
            device=args.device,
            data_root=args.data_root,
            preview=args.preview,
            robust_images=None if args.robust_images < 0 else args.robust_images,
            weights=args.weights,
            tta=args.tta,
            method=args.method,
        )
    print(rep.markdown)
    print(rep.html)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..env import setup_logging
    from ._explain import PAGE_TILES, explain_run

    _check_n(args.n, 1, "give the number of misclassified images to explain, a whole number >= 1")
    if args.sweep:
        _check_n(
            args.sweep_images,
            1,
            "give the number of test images the sweep scores, a whole number >= 1",
            "--sweep-images",
        )
    elif args.refresh:
        from ..errors import ConfigError

        raise ConfigError("--refresh recomputes the CAM sweep: give it together with --sweep.")
    setup_logging()
    with _naming_data_root(args):
        res = explain_run(
            args.run_dir,
            n=args.n,
            target=args.target,
            layer=args.layer,
            order=args.order,
            seed=args.seed,
            checkpoint=args.checkpoint,
            device=args.device,
            data_root=args.data_root,
            out=args.out,
            guided=args.guided,
            weights=args.weights,
            method=args.method,
            sweep=args.sweep,
            sweep_images=args.sweep_images,
            refresh=args.refresh,
        )
    if res.sweep is not None:
        _print_sweep(res.sweep)
    ex = res.explanation
    print(f"maps: {ex.method} at {ex.layer} ({'x'.join(map(str, ex.grid)) if ex.grid else '?'} grid)")
    if res.why:
        print(res.why)
    shown = res.explanation.indices.numel()
    if shown < args.n:
        # select_misclassified returns every misclassified image when there are fewer than --n.
        print(
            f"note: --n {args.n} is more than the {shown} misclassified test images; the gallery shows all {shown}"
            + (f", in pages of at most {PAGE_TILES} images" if shown > PAGE_TILES else "")
        )
    for key, d in res.explanation.faithfulness.items():
        print(
            f"deletion test, {key}: probability drop {d['cam_drop']:.3f} (top-20% CAM) vs {d['region_drop']:.3f} (random region) "
            f"and {d['random_drop']:.3f} (random pixels), n={d['images']}"
        )
    for path in res.files:
        print(path)
    return 0


def _print_sweep(data: dict) -> None:
    """The sweep's table, most faithful first, with the random ordering's row for comparison."""
    print(
        f"CAM sweep on {data['images']} class-balanced test images (target: the predicted class; seed {data['seed']}); "
        "sorted by ROAD gap (higher = more faithful)"
    )
    head = (
        f"{'method':<22} {'layer':<10} {'grid':>7} {'deletion':>9} {'insertion':>9} {'MoRF':>7} {'LeRF':>7} {'gap':>7}"
    )
    print(head)
    rows = sorted(data["rows"], key=lambda r: -r["road_gap"]) + [{**data["random"], "method": "random", "layer": "-"}]
    for r in rows:
        grid = "x".join(map(str, r["grid"])) if r.get("grid") else "-"
        print(
            f"{r['method']:<22} {r['layer']:<10} {grid:>7} {r['deletion_auc']:>9.3f} {r['insertion_auc']:>9.3f} "
            f"{r['road_morf_auc']:>7.3f} {r['road_lerf_auc']:>7.3f} {r['road_gap']:>7.3f}"
        )
    best = data.get("best")
    if best:
        print(
            f"most faithful: {best['method']} at {best['layer']}"
            + ("" if data["beats_random"] else " (not clearly above random)")
        )


def _int_list(text: str, what: str) -> list[int]:
    from ..errors import ConfigError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{what} = {text!r}: give whole numbers separated by commas, e.g. 1,3,5.") from None


def _cmd_robust(args: argparse.Namespace) -> int:
    from ..augment import check_corruptions, check_severities
    from ..env import setup_logging
    from ._trust import robust

    # Checked before the data and the model are loaded.
    corruptions = check_corruptions([c.strip() for c in args.corruptions.split(",")]) if args.corruptions else None
    severities = check_severities(_int_list(args.severities, "--severities")) if args.severities else None
    if args.images is not None:
        _check_n(args.images, 1, f"--images = {args.images}: give a number of test images >= 1")
    setup_logging()
    with _naming_data_root(args):
        res = robust(
            args.run_dir,
            checkpoint=args.checkpoint,
            device=args.device,
            data_root=args.data_root,
            corruptions=corruptions,
            severities=severities,
            images=args.images,
            seed=args.seed,
            cifar10c=args.cifar10c,
            refresh=args.refresh,
            weights=args.weights,
            tta=args.tta,
        )
    width = max(len(n) for n in res.corruptions)
    print(f"{'corruption':<{width}}  " + "  ".join(f"sev {s}" for s in res.severities) + "   mean")
    for name, accs in res.accuracy.items():
        print(f"{name:<{width}}  " + "  ".join(f"{a:5.1f}" for a in accs) + f"  {sum(accs) / len(accs):5.1f}")
    print(
        f"clean {res.clean_acc:.2f}%, mean corruption accuracy {res.mean_corruption_acc:.2f}% (relative drop "
        f"{100 * res.relative_drop:.1f}%), {res.images:,} test images, {res.source}"
        + (", from the cache" if res.cached else f", {res.seconds:.0f} s")
    )
    from ..rundir import ROBUSTNESS_FILE
    from ._rundir import tta_file

    print(f"{args.run_dir}/{tta_file(ROBUSTNESS_FILE, args.tta)}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..results import describe_data
    from ._compare import compare_runs

    if isinstance(args.reference, str) and Path(args.reference).is_dir():
        # `compare --reference RUN_DIR` reads the folder as the recipe's name.
        raise ConfigError(
            f"--reference = {args.reference!r} is a folder, not a recipe name: put --reference after the RUN_DIRs "
            "(`vislab compare RUN_DIR --reference`) or give a recipe (`--reference resnet9-onecycle`)."
        )
    res = compare_runs(args.run_dirs, out=args.out, reference=args.reference)
    for r in res.rows:
        best = f"{r['best_test_acc']:.2f}%" if isinstance(r["best_test_acc"], (int, float)) else "n/a"
        data = describe_data({"name": r["data"], "train_images": r["train_images"], "test_images": r["test_images"]})
        print(f"{r['run']}: best test accuracy {best} (epoch {r['best_epoch']}), {r['epochs']} epochs; data {data}")
        trust = []
        if isinstance(r.get("ece"), (int, float)):
            trust.append(f"ECE {100 * r['ece']:.2f} pp")
        if isinstance(r.get("temperature"), (int, float)):
            trust.append(f"{100 * r['ece_scaled']:.2f} pp at T = {r['temperature']:.3g}")
        rob = r.get("robustness")
        if rob and isinstance(rob.get("mean_corruption_acc"), (int, float)):
            trust.append(
                f"mean corruption accuracy {rob['mean_corruption_acc']:.2f}% vs clean {rob['clean_acc']:.2f}% "
                f"({rob['images']:,} images)"
            )
        if trust:
            print(f"{r['run']}: " + ", ".join(trust))
    for r in res.references:
        ref = r["reference"]
        if ref is None:
            print(f"{r['run']}: recipe {r['recipe']} has no course reference")
            continue
        final = f"{r['final_test_acc']:.2f}%" if isinstance(r["final_test_acc"], (int, float)) else "n/a"
        same = r["course_test_acc_at_epoch"]
        beside = f" (course at epoch {r['epochs_done']}: {same:.2f}%)" if same is not None else ""
        print(
            f"{r['run']}: recipe {r['recipe']} ({r['found']}); vislab {final} at epoch {r['epochs_done']}{beside}; "
            f"course final {ref.final:.2f}% on canonical CIFAR-10 on a GPU, this run on its own data (above)"
        )
    print(res.markdown)
    print(res.html)
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register `report`, `explain`, `robust` and `compare` on the `vislab` command's subparsers."""
    r = subparsers.add_parser(
        "report",
        help="write report.md and a self-contained report.html for a run",
        description="Metrics, config, model, curves, LR, augmented samples, per-class accuracy, confusion "
        "matrix, misclassified gallery, Grad-CAM and its deletion test, as report.md + report.html.",
    )
    _add_run_options(r, "misclassified images in the gallery (default 20; 0: none)")
    r.add_argument("--target", choices=TARGETS, default="both", help="Grad-CAM target class (default both)")
    r.add_argument(
        "--preview", type=int, default=16, metavar="N", help="augmented training images shown (0: none; default 16)"
    )
    r.add_argument(
        "--robust-images",
        type=int,
        default=2000,
        metavar="N",
        help="test images the corruption section runs on when `vislab robust` has not run yet (a class-balanced "
        "sample; default 2000; -1: all; 0: skip the section)",
    )
    r.add_argument(
        "--tta",
        choices=("none", "flip", "flip_translate"),
        help="also report test-time-augmented predictions beside the plain ones (default: the run's trainer.tta)",
    )
    r.set_defaults(func=_cmd_report)

    e = subparsers.add_parser(
        "explain",
        help="misclassified gallery and Grad-CAM for a run",
        description="Misclassified test images and their Grad-CAM maps for the predicted and/or actual "
        "class, with the deletion test; written to RUN_DIR/explain unless --out.",
    )
    _add_run_options(
        e,
        "misclassified images to explain, at most as many as the model got wrong (default 20); more than "
        "fit one readable figure are split into pages (misclassified-1.png, ...)",
    )
    e.add_argument("--target", choices=TARGETS, default="both", help="Grad-CAM target class (default both)")
    e.add_argument("--guided", action="store_true", help="also draw captum's Guided Grad-CAM for the predicted class")
    e.add_argument(
        "--sweep",
        action="store_true",
        help="score every CAM method at every candidate layer (the last three stages) by deletion/insertion and ROAD "
        "curves against a random baseline, cache the table in RUN_DIR/cam_sweep.json, and draw the gallery with the "
        "most faithful one (the report then uses it too)",
    )
    e.add_argument(
        "--sweep-images",
        type=int,
        default=100,
        metavar="N",
        help="class-balanced test images the sweep scores (default 100)",
    )
    e.add_argument("--refresh", action="store_true", help="recompute the sweep even when cam_sweep.json fits")
    e.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/explain)")
    e.set_defaults(func=_cmd_explain)

    rb = subparsers.add_parser(
        "robust",
        help="test accuracy under CIFAR-10-C-style corruptions",
        description="Accuracy of a run's model on its test set under noise (Gaussian, shot, impulse), blur (Gaussian, "
        "defocus), contrast, brightness, saturation, JPEG re-compression and pixelation, each at severities 1-5 as "
        "CIFAR-10-C defines them (Hendrycks & Dietterich 2019), computed in batched torch on the run's device; or on "
        "the published CIFAR-10-C files with --cifar10c. Cached in RUN_DIR/robustness.json; the report and "
        "`vislab compare` show it.",
    )
    rb.add_argument("run_dir", metavar="RUN_DIR", help="folder of a `vislab train` run (finished or interrupted)")
    rb.add_argument(
        "--corruptions", metavar="A,B,...", help=f"comma-separated, from {', '.join(CORRUPTION_NAMES)} (default: all)"
    )
    rb.add_argument("--severities", metavar="1,2,...", help="comma-separated severities 1-5 (default: all)")
    rb.add_argument(
        "--images", type=int, metavar="N", help="a class-balanced sample of N test images (default: the whole test set)"
    )
    rb.add_argument("--seed", type=int, default=0, help="seed of the random corruptions (default 0)")
    rb.add_argument(
        "--cifar10c", metavar="DIR", help="use the published CIFAR-10-C .npy files in DIR instead of computing them"
    )
    rb.add_argument("--refresh", action="store_true", help="recompute even when robustness.json fits")
    rb.add_argument(
        "--tta",
        choices=("none", "flip", "flip_translate"),
        default="none",
        help="predict with test-time augmentation (cached apart, robustness-tta-MODE.json; default none)",
    )
    _add_load_options(rb, "evaluate")
    rb.set_defaults(func=_cmd_robust)

    c = subparsers.add_parser(
        "compare",
        help="overlay several runs' curves and tabulate their data and metrics",
        description="Curves of several runs in one figure and a table of their data, best and final metrics; "
        "with --reference, the course's per-epoch test accuracy beside each run's.",
    )
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders of `vislab train` runs (finished or not)")
    c.add_argument(
        "--reference",
        nargs="?",
        const=True,
        default=False,
        metavar="RECIPE",
        help="overlay the course's per-epoch test accuracy and state the final figures side by side; alone: the "
        "recipe each run ran (from its summary/config), or RECIPE for every run",
    )
    c.add_argument("--out", metavar="DIR", help="output folder (default runs/compare-<time>)")
    c.set_defaults(func=_cmd_compare)
