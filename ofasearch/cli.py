"""The ``ofasearch`` command line. Exit codes: 0 success, 2 invalid input, 1 runtime failure
(a fault of the machine or of a file: one ``error:`` line, the traceback in a log file), 130
interrupted (Ctrl-C), 143 terminated (SIGTERM, stopped as cleanly as Ctrl-C stops it)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ofasearch.errors import FileFault, SpecError
from ofasearch.utils import faults
from ofasearch.utils.logs import console_logging
from ofasearch.utils.storage import as_location, uri_problem

if TYPE_CHECKING:
    from ofasearch.config import Spec

__all__ = ["failed_search_lines", "main"]


def _cmd_train(args: argparse.Namespace) -> int:
    from ofasearch.config import load_config
    from ofasearch.data import load_splits
    from ofasearch.search.plan import plan
    from ofasearch.training.job import log_summary, prepare_teacher_and_cache, resolve_resources, train
    from ofasearch.training.run_folder import prepare_output, resume_state

    config = load_config(args.config, overrides=args.set)
    res = resolve_resources(config, workers=args.workers, cpus=args.cpus_per_worker, gpus=args.gpus_per_worker)
    from ofasearch.config.schema import batch_split_problem

    problem = batch_split_problem(config.optim.batch_size, res.workers)
    if problem:  # before any data, teacher or Ray: the batch is global, split over the workers
        source = f"--workers {res.workers}" if args.workers is not None else "resources.workers_per_trial"
        raise SpecError([f"{problem} ({source})"])
    if args.storage and uri_problem(args.storage):
        raise SpecError([f"--storage: {uri_problem(args.storage)}"])
    output = (Path(args.output) if args.output else Path("runs") / config.name).resolve()
    if args.resume and args.overwrite:
        raise SpecError(["--resume: continues the run in --output; --overwrite replaces it: give one of them"])
    if args.resume and res.workers == 1:
        resume_state(output, config)  # checked before any data is loaded
    splits = load_splits(config.data)
    plan(config, splits=splits)  # stages, models and checkpoint checked before any training
    prepare_output(output, overwrite=args.overwrite, resume=args.resume)  # never overwrites a finished run
    faults.note_results_folder(output)
    progress = not args.no_progress
    logging.getLogger("ofasearch.cli").info(f"train: {res.describe()}")
    teacher, cache = prepare_teacher_and_cache(config, splits, gpus=res.gpus_per_worker, progress=progress)
    if res.workers == 1:
        summary = train(
            config,
            splits,
            output,
            teacher=teacher,
            cache=cache,
            gpus=res.gpus_per_worker,
            cpus=res.cpus_per_worker,
            progress=progress,
            resume=args.resume,
        )
    else:
        from ofasearch.cluster.trainer import train_on_ray

        summary = train_on_ray(
            config,
            output,
            teacher,
            cache,
            workers=res.workers,
            cpus_per_worker=res.cpus_per_worker,
            gpus_per_worker=res.gpus_per_worker,
            storage=args.storage,
            resume=args.resume,
        )
    log_summary(config, summary, output)
    if args.export:
        from ofasearch.models.portable import export_student

        for fmt, entry in export_student(output, list(dict.fromkeys(args.export))).items():
            logging.getLogger("ofasearch.cli").info(
                f"{fmt}: {output / entry['file']} (largest logit difference to PyTorch {entry['max_abs_diff']:.2g})"
            )
    return 0


def _crops(spec: Spec) -> set[str]:
    """Every ``augment.crop`` a run of ``spec`` may use (searched, or a pair's own)."""
    crop = spec.augment.crop
    crops = set(crop.choices) if hasattr(crop, "choices") else {crop}
    return crops | {p.settings["augment.crop"] for p in spec.pairs if "augment.crop" in p.settings}


def _cmd_validate(args: argparse.Namespace) -> int:
    from ofasearch.config import load_spec
    from ofasearch.data import load_splits
    from ofasearch.search.plan import plan

    spec = load_spec(args.spec, overrides=args.set)
    splits = load_splits(spec.data)
    space = plan(spec, splits=splits)
    searched = spec.searched_values()
    print(f"{args.spec}: valid; {len(space.pairs)} pair(s), {len(searched)} searched value(s)")
    print(splits.describe(spec.data.dataset, rrc="rrc" in _crops(spec)))
    for path, dist in searched.items():
        print(f"  {path}: {dist.model_dump()}")
    return 0


def failed_search_lines(folder: Path) -> list[str]:
    """When every search trial of the folder failed (error or diverged): the lines that say so,
    with each distinct error and how many trials it ended; [] otherwise (also before any trial)."""
    from ofasearch.results.outcome import BROKEN, DIVERGED
    from ofasearch.results.tables import TRIALS_FILE, read_rows

    search = [row for row in read_rows(folder / TRIALS_FILE) if row.get("role") == "search"]
    if not search or any(row.get("status") not in BROKEN for row in search):
        return []
    counts: dict[str, int] = {}
    for row in search:
        error = (row.get("error") or "").strip()
        reason = error.splitlines()[-1] if error else ("loss became NaN/inf" if row["status"] == DIVERGED else "?")
        key = f"{row['status']}: {reason}"
        counts[key] = counts.get(key, 0) + 1
    lines = [f"every one of the {len(search)} search trials failed ({folder}):"]
    lines += [f"  {n} x {key}" for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return lines


def _search_outcome(folder: Path) -> int:
    """Exit 1 with the distinct errors when no search trial succeeded, else 0."""
    lines = failed_search_lines(folder)
    for i, line in enumerate(lines):
        print(f"error: {line}" if i == 0 else line, file=sys.stderr)
    return 1 if lines else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ofasearch.search.run import load_and_run

    folder = load_and_run(
        args.spec,
        name=args.name,
        storage=args.storage,
        address=args.address,
        num_cpus=args.num_cpus,
        dry_run=args.dry_run,
        verbose=2 if args.verbose else 0,
        overrides=args.set,
        mlflow=args.mlflow,
    )
    return 0 if args.dry_run else _search_outcome(folder)


def _cmd_resume(args: argparse.Namespace) -> int:
    from ofasearch.search.run import resume_search

    folder = resume_search(
        args.results_dir, verbose=2 if args.verbose else 0, force_new_spec=args.force_new_spec, mlflow=args.mlflow
    )
    return _search_outcome(folder)


def _cmd_status(args: argparse.Namespace) -> int:
    # reads the folder only: no torch, timm or Ray
    from ofasearch.results.status import show_status, status_table

    if args.format == "text":
        show_status(args.results_dir)
    else:
        sys.stdout.write(status_table(args.results_dir, args.format))
    return 0


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from ofasearch.search.rebuild import rebuild
    from ofasearch.utils.storage import as_location

    folder = as_location(args.results_dir).resolve()
    done = rebuild(folder, force=args.force)
    if not done.written:
        print(f"{folder}: trials.parquet and epochs.parquet are readable; nothing to rebuild (--force rebuilds them)")
        return 0
    print(
        f"rebuilt {' and '.join(done.written)} of {folder} from Ray Tune's folders {', '.join(done.experiments)}: "
        f"{done.trials} trial(s), {done.epochs} trial-epoch(s)"
    )
    if done.unrecovered:
        print(
            f"not rebuilt: trial(s) {', '.join(done.unrecovered)}: they ended after Ray Tune's last save before a "
            "fault or kill, and the resume kept their rows instead of re-running them; restore the tables from a "
            "copy to have them back"
        )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ofasearch.results.report import write_report

    write_report(args.results_dir, top_k=args.top_k)  # prints where the report went
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ofasearch.results.export import export_config

    path, row = export_config(
        args.results_dir,
        as_location(args.output) if args.output else None,
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


def _version_text() -> str:
    """``ofasearch 0.1.0 (python 3.11.2; torch ..., timm ..., ray ..., optuna ...)``: the versions
    that decide a result, read from the installed packages' metadata (nothing is imported)."""
    from importlib import metadata

    from ofasearch import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return f"{name} not installed"

    deps = ", ".join(installed(n) for n in ("torch", "timm", "ray", "optuna"))
    return f"ofasearch {__version__} (python {sys.version.split()[0]}; {deps})"


class _PrintVersion(argparse.Action):
    """``--version``: one unwrapped line (argparse's own version action wraps it at 80 columns)."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        print(_version_text())
        parser.exit()


def _gpus_flag(value: str) -> float | str:
    """``--gpus-per-worker``: ``auto`` or a number of GPUs >= 0."""
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not allowed; allowed: auto or a number of GPUs >= 0") from None
    return number


def _set_flag(parser: argparse.ArgumentParser) -> None:
    """``--set key=value`` (repeatable): override one value of the YAML file for this run."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the file for this run (repeatable): a dotted key and a YAML value, "
        "e.g. --set optim.lr=0.002 --set 'distill.stages=[3, 4]' --set pairs[0].student.kwargs.depth=6",
    )


VERBOSE_HELP = "on a runtime fault, also print the full traceback (it is always in the log file the error names)"


def _mlflow_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        help="log every trial's params and per-epoch metrics to this MLflow tracking URI or folder "
        "(needs pip install 'ofasearch[mlflow]')",
    )


def _verbose_flag(parser: argparse.ArgumentParser, *names: str) -> None:
    """The global ``--verbose`` (also accepted after a command that has no ``--verbose`` of its
    own); SUPPRESS keeps a command's parser from resetting a ``-v`` given before the command."""
    parser.add_argument(*names, dest="traceback", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofasearch", description=__doc__)
    parser.add_argument(
        "--version", action=_PrintVersion, nargs=0, help="print the versions of ofasearch and its stack, then exit"
    )
    parser.add_argument("--verbose", "-v", dest="traceback", action="store_true", default=False, help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do (each has --help)")

    p = sub.add_parser("train", help="train one config at full budget")
    p.add_argument("config", help="train config (YAML), e.g. the best.yaml of `ofasearch export`")
    p.add_argument("--output", "-o", help="output folder (default runs/<name>)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a finished run in the output folder (default: refuse)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in the output folder from its last epoch (checkpoints/last.pth, "
        "or Ray Train's checkpoint with --workers > 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="DDP workers; 1 trains in this process, more on Ray Train (default: resources.workers_per_trial)",
    )
    p.add_argument(
        "--cpus-per-worker",
        type=float,
        help="CPUs per worker = torch threads; results depend on it (default: resources.cpus_per_worker, "
        "as the search's trial had)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=_gpus_flag,
        help="GPUs per worker, or auto: one where CUDA sees a GPU (default: resources.gpus_per_worker)",
    )
    p.add_argument(
        "--export",
        action="append",
        choices=["onnx", "torchscript"],
        help="also write the student as student.onnx / student.torchscript.pt, each checked against PyTorch "
        "(repeatable; onnx needs the 'export' extra)",
    )
    p.add_argument(
        "--storage",
        help="with --workers: where Ray Train keeps the run, a path every node sees or a URI such as "
        "s3://bucket/prefix (default: next to --output)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _set_flag(p)
    _verbose_flag(p, "--verbose", "-v")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("run", help="run a search (Ray Tune + Optuna TPE + ASHA)")
    p.add_argument("spec", help="search spec (YAML), e.g. search_spaces/cnn_to_vit.yaml")
    p.add_argument("--name", help="experiment name (default: the spec's name)")
    p.add_argument("--storage", help="results root (default: the spec's storage)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray (default: all; ignored when joining one)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, build and run every model once, check the folder; train nothing",
    )
    _set_flag(p)
    _mlflow_flag(p)
    p.add_argument(
        "--verbose", action="store_true", help="Ray Tune's own detailed output (and a fault's full traceback)"
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("resume", help="continue an interrupted search")
    p.add_argument("results_dir", help="the search's folder (<storage>/<name>)")
    p.add_argument(
        "--verbose", action="store_true", help="Ray Tune's own detailed output (and a fault's full traceback)"
    )
    p.add_argument(
        "--force-new-spec",
        action="store_true",
        help="resume even though spec.yaml was edited since the search started: what is left runs with the "
        "edited spec, finished trials keep the old one (default: refuse)",
    )
    _mlflow_flag(p)
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("status", help="table of a search's trials so far (or of the searches under a storage root)")
    p.add_argument("results_dir", help="a search's folder, or a storage root holding several")
    p.add_argument(
        "--format",
        choices=["text", "json", "csv"],
        default="text",
        help="text (default): the table; json or csv: one record per trial (per search for a storage root)",
    )
    _verbose_flag(p, "--verbose", "-v")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "rebuild",
        help="rebuild trials.parquet and epochs.parquet from Ray Tune's experiment folders (after they were "
        "deleted or damaged)",
    )
    p.add_argument("results_dir", help="the search's folder (<storage>/<name>) whose tables to rebuild")
    p.add_argument(
        "--force", action="store_true", help="also rebuild tables that are readable (default: only missing or damaged)"
    )
    _verbose_flag(p, "--verbose", "-v")
    p.set_defaults(func=_cmd_rebuild)

    p = sub.add_parser("report", help="write report.html (plots, top configs, gains) for a search")
    p.add_argument("results_dir", help="the search's folder (<storage>/<name>)")
    p.add_argument("--top-k", type=int, default=10, help="rows of the top-configs table (default 10)")
    _verbose_flag(p, "--verbose", "-v")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="write one of a search's top configs as a train config")
    p.add_argument("results_dir", help="the search's folder (<storage>/<name>)")
    p.add_argument(
        "--rank",
        type=int,
        default=1,
        help="1 = the best full-budget candidate, search trial or baseline (default: what best.yaml holds), 2 = ...",
    )
    p.add_argument("--output", "-o", help="file to write (default RESULTS_DIR/rank<K>.yaml)")
    p.add_argument("--max-latency-ms", type=float, help="only trials whose student runs a batch of 1 within this")
    p.add_argument("--max-params", type=int, help="only trials whose student has at most this many parameters")
    _verbose_flag(p, "--verbose", "-v")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("validate", help="check a spec or config without training")
    p.add_argument("spec", help="search spec or train config (YAML)")
    _set_flag(p)
    _verbose_flag(p, "--verbose", "-v")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("models", help="list timm models whose stage features ofasearch can use")
    p.add_argument("filter", nargs="?", default="*", help="fnmatch pattern, or a substring (default: all)")
    p.add_argument("--family", choices=["cnn", "vit", "mlp"], help="only models of this family (default: all)")
    p.add_argument("--image-size", type=int, default=32, help="input size for the stage shapes (default 32)")
    p.add_argument("--limit", type=int, default=50, help="show at most N models (default 50; 0: no limit)")
    p.add_argument("--verbose", action="store_true", help="also list the models not usable at this size, and why")
    p.set_defaults(func=_cmd_models)
    return parser


def _runtime_fault(exc: Exception, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """One ``error:`` line (what broke, where, the remedy, the log file); exit 1."""
    folder = faults.noted_results_folder()
    if folder is None and args.command == "resume":
        folder = as_location(args.results_dir).resolve()
    try:
        resumable = args.command in ("run", "resume") and folder is not None and (folder / "state.json").is_file()
    except OSError:  # the fault may be the storage itself (an object store out of reach)
        resumable = False
    then = f"continue with: ofasearch resume {folder}" if resumable else "run the command again"
    line = faults.describe_fault(exc, then=then) or f"{type(exc).__name__}: {str(exc).strip() or 'no message'}"
    line = " ".join(line.split())  # one line, whatever the message held
    log = faults.write_fault_log(exc, argv, folder)
    if args.traceback or (args.command in ("run", "resume") and args.verbose):
        faults.print_traceback(exc)
    where = f"full traceback in {log}" if log else "no log file could be written"
    print(f"error: {line} ({where}; --verbose prints it)", file=sys.stderr)
    return 1


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """SIGTERM (Slurm, Kubernetes, a spot instance's shutdown) stops the command as Ctrl-C does:
    a KeyboardInterrupt where the command is, so a search ends its phase cleanly and prints its
    resume line. A second SIGTERM while it stops is ignored (the stop is under way). Yields the
    signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    with faults.fault_scope(), _sigterm_as_ctrl_c() as terminated:
        try:
            with console_logging():
                return int(args.func(args) or 0)
        except SpecError as exc:
            for line in exc.problems:
                print(f"error: {line}", file=sys.stderr)
            return 2
        except FileFault as exc:  # a missing or damaged file whose remedy the line says: no traceback
            for line in exc.problems:
                print(f"error: {line}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:
            print(f"{str(exc) or 'interrupted'}{' (SIGTERM)' if terminated else ''}", file=sys.stderr)
            return 128 + signal.SIGTERM if terminated else 130
        except Exception as exc:
            return _runtime_fault(exc, args, argv)


if __name__ == "__main__":
    sys.exit(main())
