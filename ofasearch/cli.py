"""The ``ofasearch`` command line. Exit codes: 0 success, 2 invalid input, 1 runtime failure."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ofasearch.errors import SpecError
from ofasearch.utils.logs import console_logging

__all__ = ["main"]


def _cmd_train(args: argparse.Namespace) -> int:
    from ofasearch.config import load_config
    from ofasearch.data import load_splits
    from ofasearch.search.plan import plan
    from ofasearch.training.job import log_summary, prepare_teacher_and_cache, train

    config = load_config(args.config)
    if args.workers < 1:
        raise SpecError([f"--workers: {args.workers} is not allowed; must be >= 1"])
    output = (Path(args.output) if args.output else Path("runs") / config.name).resolve()
    splits = load_splits(config.data)
    plan(config, splits=splits)  # stages, models and checkpoint checked before any training
    progress = not args.no_progress
    teacher, cache = prepare_teacher_and_cache(config, splits, gpus=args.gpus_per_worker, progress=progress)
    cpus = config.resources.cpus_per_worker
    if args.workers == 1:
        summary = train(
            config,
            splits,
            output,
            teacher=teacher,
            cache=cache,
            gpus=args.gpus_per_worker,
            cpus=cpus,
            progress=progress,
        )
    else:
        from ofasearch.cluster.trainer import train_on_ray

        summary = train_on_ray(
            config,
            output,
            teacher,
            cache,
            workers=args.workers,
            cpus_per_worker=cpus,
            gpus_per_worker=args.gpus_per_worker,
        )
    log_summary(config, summary, output)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ofasearch.config import load_spec
    from ofasearch.search.plan import plan

    spec = load_spec(args.spec)
    space = plan(spec)
    searched = spec.searched_values()
    print(f"{args.spec}: valid; {len(space.pairs)} pair(s), {len(searched)} searched value(s)")
    for path, dist in searched.items():
        print(f"  {path}: {dist.model_dump()}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ofasearch.search.run import load_and_run

    load_and_run(
        args.spec,
        name=args.name,
        storage=args.storage,
        address=args.address,
        num_cpus=args.num_cpus,
        dry_run=args.dry_run,
        verbose=2 if args.verbose else 0,
    )
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from ofasearch.search.run import resume_search

    resume_search(Path(args.results_dir), verbose=2 if args.verbose else 0)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from ofasearch.results.status import show_status  # reads the folder only: no torch, timm or Ray

    show_status(Path(args.results_dir))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ofasearch.results.report import write_report

    write_report(Path(args.results_dir), top_k=args.top_k)  # prints where the report went
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ofasearch.results.export import export_config

    path, row = export_config(
        Path(args.results_dir),
        Path(args.output) if args.output else None,
        rank=args.rank,
        max_latency_ms=args.max_latency_ms,
        max_params=args.max_params,
    )
    pair = f"{row['teacher']} -> {row['student']}"
    print(f"trial {row['trial_id']} ({pair}, val_acc {row['val_acc_mean']:.4f}) -> {path}")
    print(f"train it: ofasearch train {path}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from ofasearch.models.catalog import print_models

    print_models(
        family=args.family, pattern=args.filter, image_size=args.image_size, limit=args.limit, verbose=args.verbose
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofasearch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one config at full budget")
    p.add_argument("config")
    p.add_argument("--output", "-o", help="output folder (default runs/<name>)")
    p.add_argument("--workers", type=int, default=1, help="DDP workers on Ray Train (default 1: in process)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("run", help="run a search (Ray Tune + Optuna TPE + ASHA)")
    p.add_argument("spec")
    p.add_argument("--name", help="experiment name (default: the spec's name)")
    p.add_argument("--storage", help="results root (default: the spec's storage)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--dry-run", action="store_true", help="validate and build every pair, train nothing")
    p.add_argument("--verbose", action="store_true", help="Ray Tune's own detailed output")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted search")
    p.add_argument("results_dir")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("status", help="table of a search's trials so far")
    p.add_argument("results_dir")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("report", help="write report.html (plots, top configs, gains) for a search")
    p.add_argument("results_dir")
    p.add_argument("--top-k", type=int, default=10, help="rows of the top-configs table (default 10)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="write one of a search's top configs as a train config")
    p.add_argument("results_dir")
    p.add_argument("--rank", type=int, default=1, help="1 = best full-budget trial (default), 2 = second...")
    p.add_argument("--output", "-o", help="file to write (default RESULTS_DIR/rank<K>.yaml)")
    p.add_argument("--max-latency-ms", type=float, help="only trials whose student runs a batch of 1 within this")
    p.add_argument("--max-params", type=int, help="only trials whose student has at most this many parameters")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("validate", help="check a spec or config without training")
    p.add_argument("spec")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("models", help="list timm models whose stage features ofasearch can use")
    p.add_argument("filter", nargs="?", default="*", help="fnmatch pattern, or a substring (default: all)")
    p.add_argument("--family", choices=["cnn", "vit", "mlp"])
    p.add_argument("--image-size", type=int, default=32, help="input size for the stage shapes (default 32)")
    p.add_argument("--limit", type=int, default=50, help="show at most N models (default 50; 0: no limit)")
    p.add_argument("--verbose", action="store_true", help="also list the models not usable at this size, and why")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with console_logging():
            return int(args.func(args) or 0)
    except SpecError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
