"""The `vislab` command line: train, lr-find, report, explain, compare, predict, export, recipes, summary, bench."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from .errors import Interrupted, VislabError
from .version import __version__


def _cmd_train(args: argparse.Namespace) -> int:
    from .run import train

    if args.resume and args.recipe:
        raise VislabError("Give either a recipe to start a new run or --resume RUN_DIR to continue one, not both.")
    overrides = [*args.set, "trainer.report=false"] if args.no_report else args.set
    run = train(args.recipe, overrides, out=args.out, resume=args.resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 speaks for the job
    best, final = run.summary.get("best") or {}, run.summary.get("final") or {}
    print(
        f"best epoch by {run.summary.get('best_metric', 'test_acc')}: {best.get('epoch')} ({best.get('test_acc', float('nan')):.2f}% test accuracy), "
        f"final {final.get('test_acc', float('nan')):.2f}%, {run.summary['wall_seconds']:.0f} s on {run.summary['device_name']}"
    )
    print(run.run_dir)
    return 0


def _cmd_lr_find(args: argparse.Namespace) -> int:
    from .run import lr_find
    from .tuner import RangeTestError, format_suggestions

    finder = lr_find(args.recipe, args.set, out=args.out, save=True)
    r = finder.results
    try:
        s = finder.suggestions()
    except RangeTestError as e:
        raise RangeTestError(f"{e} The measured sweep is in {finder.run_dir}.") from None
    print(
        f"chosen lr {s['chosen']:.3g} ({s['method']}); {r['steps']} of {r['num_iter']} steps ({r['stop_reason']}) in {r['seconds']:.1f} s"
    )
    print(f"suggestions: {format_suggestions(s)}")
    for w in s["warnings"]:
        print(f"warning: {w}")
    print(f"to train with it: {_lr_override(args, s['chosen'])}")
    print(finder.run_dir)
    return 0


def _lr_override(args: argparse.Namespace, lr: float) -> str:
    """The `--set` that trains the recipe at `lr`: OneCycle's peak is sched.max_lr (optim.lr is ignored when it
    is set), every other schedule starts from optim.lr."""
    from .config import load_config

    _, cfg = load_config(args.recipe, args.set)  # the config lr_find just ran, validated again (no data loaded)
    key = "sched.max_lr" if cfg.sched.name == "onecycle" else "optim.lr"
    recipe = f" {args.recipe}" if args.recipe else ""
    return f"vislab train{recipe} --set {key}={lr:.3g}"


def _print_recipe(name: str) -> int:
    from importlib import resources

    from .config import list_recipes
    from .errors import ConfigError

    names = list_recipes()
    if name not in names:
        raise ConfigError(f"Unknown recipe {name!r}: `vislab recipes NAME` prints one of {', '.join(names)}.")
    # The shipped file verbatim, comment header included: the user's my.yaml starts as a copy of it.
    print((resources.files("vislab") / "recipes" / f"{name}.yaml").read_text(), end="")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .config import DEFAULT_RECIPE, list_recipes, recipe_info
    from .results import COURSE_SETUP, course_reference, describe_result

    if args.name is not None:
        return _print_recipe(args.name)
    # The default first: it is the one a newcomer runs (`vislab recipes | head -1`).
    for name in sorted(list_recipes(), key=lambda n: n != DEFAULT_RECIPE):
        info = recipe_info(name)
        mark = " (default)" if name == DEFAULT_RECIPE else ""
        print(f"{name}{mark}\n  {info['title']}")
        if not args.verbose:
            continue
        if info["description"]:
            print(textwrap.indent(textwrap.fill(info["description"], 88), "  "))
        # The two figures side by side, each saying where it was measured: they are not on the same data or hardware.
        if info["course"] is not None:
            course = f"course's figure: {info['course']:.2f}% test accuracy ({COURSE_SETUP})"
            print(textwrap.indent(textwrap.fill(course, 88, subsequent_indent="  "), "  "))
        measured = info["measured"]
        line = (
            describe_result(measured, course_reference(name)) if measured else "no recorded run yet (docs/results.md)"
        )
        print(textwrap.indent(textwrap.fill(f"vislab measured: {line}", 88, subsequent_indent="  "), "  "))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from .models import create_model, model_summary

    model = create_model(
        args.model,
        num_classes=args.num_classes,
        **({"norm": args.norm} if args.norm else {}),
        **({"width": args.width} if args.width else {}),
    )
    print(model_summary(model, (1, 3, args.image_size, args.image_size), depth=args.depth))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from .bench import BENCH_FILE, format_table, run_bench
    from .env import setup_logging

    setup_logging()
    out = Path(args.out or f"runs/bench-{datetime.now():%Y%m%d-%H%M%S}")
    # The command as given, for bench.json (main() may be called with an argv other than sys.argv).
    given = {
        "--quick": args.quick,
        "--out": args.out,
        "--device": None if args.device == "auto" else args.device,
        "--repeats": args.repeats,
        "--workers": args.workers,
        "--compile": args.compile,
        "--no-recipes": args.no_recipes,
        "--data-root": args.data_root,
        "--size": args.size,
    }
    command = " ".join(
        [
            "vislab bench",
            *(k if v is True else f"{k} {v}" for k, v in given.items() if v is not None and v is not False),
        ]
    )
    report = run_bench(
        out,
        size=args.size or ("quick" if args.quick else "full"),
        device=args.device,
        repeats=args.repeats,
        workers=args.workers,
        compile_model=args.compile,
        recipes=not args.no_recipes,
        data_root=args.data_root,
        command=command,
    )
    print(format_table(report))
    print(out / BENCH_FILE)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json
    import logging

    from .deploy import describe_temperature, format_table, predict_files
    from .env import setup_logging
    from .errors import ConfigError

    if args.cam and args.out is None:
        raise ConfigError("--cam writes one Grad-CAM overlay PNG per image: give the folder for them with --out DIR.")
    if args.out is not None and not args.cam:
        raise ConfigError("--out DIR is where --cam writes its Grad-CAM overlays; add --cam, or drop --out.")
    # Warnings (skipped files) on stderr; stdout holds only the table or the JSON.
    setup_logging(logging.WARNING)
    results = predict_files(
        args.run_dir,
        args.paths,
        top_k=args.top_k,
        checkpoint=args.checkpoint,
        device=args.device,
        data_root=args.data_root,
        strict=args.strict,
        cam_dir=args.out if args.cam else None,
        layer=args.layer,
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    first = results[0]
    print(f"# checkpoint {first.checkpoint}, {describe_temperature(first.temperature)}")
    print(format_table(results))
    if args.cam:
        print(f"# Grad-CAM overlays of the predicted class in {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .deploy import export_run
    from .env import setup_logging

    setup_logging()
    res = export_run(
        args.run_dir,
        format=args.format,
        out=args.out,
        checkpoint=args.checkpoint,
        with_normalize=args.with_normalize,
        data_root=args.data_root,
    )
    info, check = res.info, res.info["parity"]
    if res.replaced is not None:
        print(
            f"replaced the earlier {res.replaced['format']} export in {res.out_dir} (of {res.replaced.get('exported_at')})"
        )
    inp = info["input"]
    print(
        f"{info['format']}: input {inp['name']} {inp['dtype']} (batch, 3, {info['image_size'][0]}, {info['image_size'][1]}), "
        + (
            "normalized inside the model"
            if info["normalize_included"]
            else "normalize with model.json's mean/std first"
        )
        + f"; checkpoint {info['checkpoint']['name']} (epoch {info['checkpoint']['epoch']})"
    )
    if check["max_abs_logit_diff"] is not None:
        print(
            f"parity: max abs logit difference {check['max_abs_logit_diff']:.2e} vs PyTorch on {check['images']} test "
            f"images ({check['runtime']})"
        )
    else:
        print(f"parity: {check['note']}")
    print(res.model_file)
    print(res.info_file)
    return 0


def _add_deploy_subcommands(sub: argparse._SubParsersAction) -> None:
    from .deploy import DEFAULT_TOP_K, EXPORT_FORMATS

    checkpoint_help = (
        "checkpoint to use: best, last, interrupted (of a stopped run) or a path (default: best, else last)"
    )
    data_root_help = "data folder, when the run's data.root does not resolve from here (its mean/std and class names)"
    p = sub.add_parser(
        "predict",
        help="classify image files with a run's model",
        description="Classify PNG/JPEG files with a run's model; folders are searched recursively (sorted). Each image "
        "is converted to RGB, resized to the run's image size as its data set was and normalized with its mean/std. "
        "Prints the top-k classes and their probabilities: the softmax of the logits divided by the temperature fitted "
        "for this checkpoint (calibration.json) when there is one, else the plain softmax; the first line says which. "
        "Files that cannot be decoded are skipped with a warning (refused with --strict).",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder of a `vislab train` run (finished or interrupted)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders searched for .png/.jpg/.jpeg")
    p.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"classes shown per image (default {DEFAULT_TOP_K})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {path, predictions: [{class, prob}], temperature, ...}",
    )
    p.add_argument(
        "--cam", action="store_true", help="write a Grad-CAM overlay of the predicted class per image to --out"
    )
    p.add_argument("--out", metavar="DIR", help="folder for the --cam overlays (<file name>-cam.png)")
    p.add_argument(
        "--layer", metavar="NAME", help="Grad-CAM layer, a dotted module name (default: the model's registered layer)"
    )
    p.add_argument("--checkpoint", metavar="best|last|interrupted|PATH", help=checkpoint_help)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--data-root", metavar="DIR", help=data_root_help)
    p.add_argument(
        "--strict", action="store_true", help="refuse (exit 2) if any file cannot be decoded instead of skipping it"
    )
    p.set_defaults(func=_cmd_predict)

    e = sub.add_parser(
        "export",
        help="export a run's model to ONNX (or pt2 / TorchScript) with a model.json",
        description="Export a run's model, fp32 in eval mode with a dynamic batch dimension, and model.json beside it: "
        "input name, shape, dtype and range, class names, image size, mean/std, checkpoint, versions, the fitted "
        "temperature and the largest logit difference between the exported file and PyTorch on test images "
        "(ONNX: measured with onnxruntime when installed). Without --with-normalize the model takes float32 images "
        "already normalized with model.json's mean/std; with it, uint8 RGB pixels 0..255. An earlier export of the "
        "same format in the folder is replaced (and said so); nothing else there is overwritten.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="folder of a `vislab train` run (finished or interrupted)")
    e.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="onnx",
        help="onnx (needs pip install 'vislab[onnx]'), pt2 (torch.export) or torchscript (torch.jit.trace, deprecated "
        "by PyTorch; for libtorch) (default onnx)",
    )
    e.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/export)")
    e.add_argument("--checkpoint", metavar="best|last|interrupted|PATH", help=checkpoint_help)
    e.add_argument(
        "--with-normalize",
        action="store_true",
        help="take uint8 RGB pixels (N, 3, H, W) 0..255 and apply the run's mean/std inside the exported model",
    )
    e.add_argument("--data-root", metavar="DIR", help=data_root_help)
    e.set_defaults(func=_cmd_export)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vislab", description="Fast, tested image-classification experiments on CIFAR-10-class data."
    )
    p.add_argument("--version", action="version", version=f"vislab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a recipe (default: quick)",
        description="Train a recipe or YAML config; prints the run folder at the end.",
    )
    t.add_argument(
        "recipe", nargs="?", help="recipe name (see `vislab recipes`) or path of a YAML config; default: quick"
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.1 (repeatable)",
    )
    t.add_argument("--out", help="run folder (default: runs/<recipe>-<YYYYmmdd-HHMMSS>)")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an earlier run from its latest checkpoint (an epoch end, or inside an epoch: trainer.checkpoint_minutes, Ctrl-C)",
    )
    t.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out folder instead of writing beside it"
    )
    t.add_argument(
        "--no-report",
        action="store_true",
        help="skip report.md / report.html at the end (same as --set trainer.report=false)",
    )
    t.set_defaults(func=_cmd_train)

    f = sub.add_parser(
        "lr-find",
        help="LR range test of a recipe",
        description="Leslie Smith's LR range test on a recipe's model, optimizer, data, augmentation and precision "
        "(settings: the lr_find section). Prints the chosen LR and the folder holding lr_find.json and lr_find.png.",
    )
    f.add_argument(
        "recipe", nargs="?", help="recipe name (see `vislab recipes`) or path of a YAML config; default: quick"
    )
    f.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set lr_find.num_iter=200 (repeatable)",
    )
    f.add_argument("--out", help="output folder (default: runs/lr-find-<recipe>-<YYYYmmdd-HHMMSS>)")
    f.set_defaults(func=_cmd_lr_find)

    r = sub.add_parser(
        "recipes",
        help="list the shipped recipes, or print one",
        description="List the recipes shipped with vislab; with NAME, print that recipe's YAML to start your own config from "
        "(`vislab recipes quick > my.yaml`, then `vislab train my.yaml`). A YAML file may also start with `recipe: NAME` "
        "and hold only the keys it changes in that recipe.",
    )
    r.add_argument("name", nargs="?", metavar="NAME", help="a recipe to print as YAML (its comment header included)")
    r.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print each recipe's description, the course's figure and vislab's measured one (docs/results.json)",
    )
    r.set_defaults(func=_cmd_recipes)

    s = sub.add_parser(
        "summary",
        help="print a model's layer table",
        description="Layer table, output shapes and parameter counts (torchinfo).",
    )
    s.add_argument("model", help="model name, e.g. resnet18")
    s.add_argument("--num-classes", type=int, default=10, help="size of the classifier's output (default 10)")
    s.add_argument(
        "--norm", choices=["batch", "group", "layer"], help="normalization layers (default: the model's own)"
    )
    s.add_argument("--width", type=float, help="channel-width multiplier, e.g. 0.25 (default: the model's own)")
    s.add_argument("--image-size", type=int, default=32, help="height and width of the input images (default 32)")
    s.add_argument("--depth", type=int, default=3, help="nesting depth of the layer table (default 3)")
    s.set_defaults(func=_cmd_summary)

    b = sub.add_parser(
        "bench",
        help="benchmark vislab against the course-style pipeline",
        description="Measure, side by side in one process: augmentation (tensor vs albumentations backend), training "
        "(vislab engine vs a course-style DataLoader + albumentations + fp32 loop), the engine's overhead, evaluation, "
        "Grad-CAM and the LR range test; on CUDA also the resnet9-onecycle and resnet18-bn recipes. Prints a table and "
        "writes bench.json (medians of the repeats, ratios, machine, versions, load average).",
    )
    b.add_argument(
        "--quick", action="store_true", help="fewer images, steps and repeats: a few minutes on a 2-core CPU"
    )
    b.add_argument("--out", help="output folder for bench.json (default: runs/bench-<YYYYmmdd-HHMMSS>)")
    b.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    b.add_argument("--repeats", type=int, help="timed repeats per figure, the median is reported (default: 5)")
    b.add_argument(
        "--workers", type=int, help="DataLoader workers of the albumentations and course pipelines (default: CPU count)"
    )
    b.add_argument(
        "--compile", action="store_true", help="also time the vislab engine on a torch.compile'd model (slow start)"
    )
    b.add_argument(
        "--no-recipes", action="store_true", help="on CUDA, skip training the resnet9-onecycle and resnet18-bn recipes"
    )
    b.add_argument(
        "--data-root",
        help="CIFAR-10 for the recipe runs (on CUDA: resnet9-onecycle, resnet18-bn; full mode: quick vs the quick it "
        "replaced, time to accuracy): an imagefolder root or a folder holding the archive",
    )
    b.add_argument("--size", choices=["full", "quick", "tiny"], help=argparse.SUPPRESS)  # "tiny": the tests' smoke size
    b.set_defaults(func=_cmd_bench)

    from .report.commands import add_subcommands  # report, explain, compare

    add_subcommands(sub)
    _add_deploy_subcommands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            # Buffered output meets a closed pipe here at the latest (`vislab recipes -v | head -1`), inside
            # the handler below rather than at interpreter exit, where Python would print a traceback-like notice.
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader has gone, as `head`, `less` or `grep -m1` do: stop quietly, as Unix tools do. Whatever is
        # still buffered goes to /dev/null, so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # the status of a process ended by SIGPIPE, what the shell reports for `cat big | head`


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except VislabError as e:
        print(f"vislab: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        where = f" --resume {e.run_dir}" if getattr(e, "run_dir", None) else " --resume RUN_DIR"
        saved = (
            "the run is saved up to that step (checkpoints/interrupted), and a resume continues from it"
            if e.mid_epoch
            else "the completed epochs are saved"
        )
        print(f"vislab: {e}; {saved}. Continue with: vislab train{where}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("vislab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
