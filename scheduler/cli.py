"""``python -m scheduler``: launch, follow, cancel and report on studies; migrate the DB.

Each command parses its flags, calls one library function and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler.data import TASKS
from scheduler.options import DEFAULT_STUDY, LaunchOptions, flag_names
from scheduler.optuna_export import (
    DEFAULT_INTERVAL_S,
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    OptunaExport,
)
from scheduler.report import REPORT_TOP, StudyReport, format_csv, format_report, study_report
from scheduler.status import (
    cancel_study,
    format_cancel,
    format_studies,
    format_study,
    studies_status,
    study_status,
)
from seqsweep.cli_support import (
    OneLineParser,
    bounded,
    interrupt_on_termination,
    pack_size_arg,
    run_cli,
)
from seqsweep.db import ResultStore
from seqsweep.errors import SeqsweepError
from seqsweep.urls import (
    BROKER_ENV,
    DB_ENV,
    DEFAULT_BROKER_URL,
    DEFAULT_DB_URL,
    mask_url,
    resolve_broker_url,
    resolve_db_url,
)
from seqsweep.version import __version__
from seqsweep.vocab import OBJECTIVES, Pruner, Sampler, StudyStatus

#: The flags' defaults are the options' and the study settings' (one place each).
_LAUNCH = LaunchOptions()
_STUDY = _LAUNCH.settings


def parser(prog: str = "seqsweep") -> argparse.ArgumentParser:
    """The ``seqsweep`` command line: one subcommand per task."""
    cli = OneLineParser(
        prog=prog,
        description="Distributed hyperparameter search for Keras Sequential models on Celery.",
    )
    cli.add_argument("--version", action="version", version=f"seqsweep {__version__}")
    commands = cli.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    db = OneLineParser(add_help=False)
    db.add_argument("--db", help=f"results DB URL (default: ${DB_ENV} or {DEFAULT_DB_URL})")
    broker = OneLineParser(add_help=False)
    broker.add_argument(
        "--broker",
        help=f"broker URL (default: ${BROKER_ENV} or the embedded {DEFAULT_BROKER_URL})",
    )
    study = OneLineParser(add_help=False)
    study.add_argument(
        "--study", default=DEFAULT_STUDY, help=f"study name (default: {DEFAULT_STUDY})"
    )
    # status and cancel also take the study as a positional argument, as they always did.
    named = OneLineParser(add_help=False)
    named.add_argument("--study", dest="study_flag", metavar="STUDY", help="study name")

    run = commands.add_parser(
        "launch",
        parents=[db, broker, study],
        help="sample trials, enqueue them and wait for the results",
    )
    run.add_argument(
        "--trials",
        type=bounded("trials"),
        default=_LAUNCH.trials,
        help="trials in the study; a larger number extends it (default: %(default)s)",
    )
    run.add_argument("--seed", type=int, help="study seed (default: random, then stored)")
    run.add_argument("--space", type=Path, help="YAML or JSON search space file")
    run.add_argument(
        "--data",
        type=Path,
        help="CSV (with --target) or NPZ (X, y) data file; default: built-in synthetic set",
    )
    run.add_argument("--target", help="label (or regression target) column of a CSV file")
    run.add_argument(
        "--task",
        choices=TASKS,
        default=_LAUNCH.task,
        help="what the network predicts; auto: regression for a float target with more "
        "than 20 distinct values, else classification (default: %(default)s)",
    )
    run.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="your own build function, build(params, n_features, n_outputs, task) -> compiled "
        "keras.Model, importable on every worker (default: the built-in Sequential networks)",
    )
    run.add_argument(
        "--objective",
        choices=tuple(OBJECTIVES),
        help="the final metric that ranks trials (default: val_accuracy for "
        "classification, val_loss for regression)",
    )
    run.add_argument(
        "--sampler",
        choices=tuple(str(s) for s in Sampler),
        default=str(_STUDY.sampler),
        help="how trials' parameters are picked: random draws, scrambled Sobol points, or "
        "every combination of a space of choices (grid), shuffled by the seed and capped at "
        "--trials, or Optuna's TPE, Gaussian process (gp) or CMA-ES (cmaes) picking each "
        "trial from the finished ones (default: %(default)s)",
    )
    run.add_argument(
        "--in-flight",
        type=bounded("in_flight"),
        help="trials --sampler tpe, gp or cmaes keeps queued or running while it samples "
        "the next from the finished ones (default: twice --local-workers, at least 4)",
    )
    run.add_argument(
        "--pruner",
        choices=tuple(str(p) for p in Pruner),
        default=str(_STUDY.pruner),
        help="stop bad trials at epoch ends: median (worse than the median of the other "
        "trials at that epoch, from --min-epochs on) or asha (at rungs min-epochs x "
        "reduction-factor^k, only the top 1/reduction-factor go on) (default: %(default)s)",
    )
    run.add_argument(
        "--reduction-factor",
        type=bounded("reduction_factor"),
        default=_STUDY.reduction_factor,
        help="--pruner asha's eta, at least 2 (default: %(default)s)",
    )
    run.add_argument(
        "--min-epochs",
        type=bounded("min_epochs"),
        default=_STUDY.min_epochs,
        help="the first epoch at which a pruner may stop a trial (default: %(default)s)",
    )
    run.add_argument(
        "--epochs", type=bounded("epochs"), default=_STUDY.epochs, help="default: %(default)s"
    )
    run.add_argument(
        "--batch-size",
        type=bounded("batch_size"),
        default=_STUDY.batch_size,
        help="default: %(default)s",
    )
    run.add_argument(
        "--val-fraction", type=float, default=_STUDY.val_fraction, help="default: %(default)s"
    )
    run.add_argument(
        "--test-fraction", type=float, default=_STUDY.test_fraction, help="default: %(default)s"
    )
    run.add_argument(
        "--trial-timeout",
        type=float,
        default=_STUDY.trial_timeout_s,
        help="seconds before a trial is stopped and marked failed (default: %(default)g)",
    )
    run.add_argument(
        "--pack-size",
        type=pack_size_arg,
        default=_STUDY.pack_size,
        help="trials of one shape a worker trains together as one computation; "
        "1 turns packing off; auto: each worker measures it per device and shape "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--local-workers",
        type=bounded("local_workers"),
        default=_LAUNCH.local_workers,
        help="worker processes to start here; 0 uses remote workers only (default: one per core)",
    )
    run.add_argument(
        "--max-attempts",
        type=bounded("max_attempts"),
        default=_LAUNCH.max_attempts,
        help="runs of a trial whose worker vanished (killed, OOM) before it is marked failed "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--top",
        type=bounded("top_k"),
        default=_LAUNCH.top_k,
        help="rows in the final table (default: %(default)s)",
    )
    run.add_argument("--format", choices=("table", "json"), default="table")
    run.add_argument(
        "--detach",
        action="store_true",
        help="enqueue the trials and return at once; start workers with python -m worker",
    )

    rep = commands.add_parser("report", parents=[db, study], help="print the best trials")
    rep.add_argument(
        "--top",
        type=bounded("top_k"),
        default=REPORT_TOP,
        help="rows in the table (default: %(default)s)",
    )
    rep.add_argument("--format", choices=("table", "json", "csv"), default="table")
    rep.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write one self-contained HTML page with plots (works offline)",
    )

    stat = commands.add_parser(
        "status", parents=[db, named], help="list the studies, or show one in detail"
    )
    stat.add_argument("name", nargs="?", metavar="STUDY", help="a study (default: list them all)")
    stat.add_argument("--format", choices=("table", "json"), default="table")

    can = commands.add_parser(
        "cancel",
        parents=[db, named],
        help="stop a study: queued trials never run, running ones finish",
    )
    can.add_argument("name", nargs="?", metavar="STUDY", help="the study (or --study)")
    can.add_argument("--format", choices=("table", "json"), default="table")

    exp = commands.add_parser(
        "export",
        parents=[db, study],
        help="retrain the best trial from its record and save it as a .keras file",
    )
    exp.add_argument("--out", type=Path, required=True, help="where to write, e.g. best.keras")
    exp.add_argument("--trial", type=bounded("trial"), help="this trial instead of the best")
    exp.add_argument("--format", choices=("table", "json"), default="table")

    opt = commands.add_parser(
        "export-optuna",
        parents=[db, study],
        help="write the study into an Optuna storage, to view it in optuna-dashboard",
    )
    opt.add_argument(
        "--storage",
        required=True,
        metavar="URL",
        help="Optuna RDB storage, e.g. sqlite:///optuna.db (never the results DB)",
    )
    opt.add_argument(
        "--watch",
        action="store_true",
        help="keep it in step until the study is no longer running (Ctrl-C stops sooner)",
    )
    opt.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        metavar="S",
        help=f"seconds between passes with --watch, {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g} "
        "(default: %(default)g)",
    )
    opt.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="json: one object per pass, one per line",
    )

    rec = commands.add_parser(
        "recover",
        parents=[db, broker],
        help="requeue trials whose worker or message was lost, and send missing messages",
    )
    rec.add_argument("--study", help="only this study (default: every running or cancelled study)")
    rec.add_argument("--format", choices=("table", "json"), default="table")

    commands.add_parser(
        "migrate",
        parents=[db],
        help="create or upgrade the results DB schema (also done automatically)",
    )
    return cli


def main(argv: list[str] | None = None, prog: str = "seqsweep") -> int:
    """The ``seqsweep`` console script; ``python -m scheduler`` passes its own ``prog``."""
    cli = parser(prog)
    args = cli.parse_args(argv)
    if hasattr(args, "study_flag"):
        args.study = _one_study(cli, args.name, args.study_flag)
        if args.command == "cancel" and args.study is None:
            cli.error("cancel needs the study to stop: seqsweep cancel --study NAME")
    handler = {
        "launch": _launch,
        "report": _report,
        "status": _status,
        "cancel": _cancel,
        "export": _export,
        "export-optuna": _export_optuna,
        "recover": _recover,
        "migrate": _migrate,
    }[args.command]
    return run_cli(lambda: handler(args))


def _one_study(
    parser: argparse.ArgumentParser, positional: str | None, flag: str | None
) -> str | None:
    """The study named by ``STUDY`` or ``--study``; both are fine if they agree."""
    if positional is not None and flag is not None and positional != flag:
        parser.error(
            f"the study is named twice, {positional!r} and --study {flag!r}; give one of them"
        )
    return positional if positional is not None else flag


# Each command imports what only it needs: Celery, the broker and the launch machinery
# are a good part of a report's start-up, which a report on 10,000 trials cannot afford.
def _launch(args: argparse.Namespace) -> int:
    from scheduler.launch import launch, refuse_detach, start_study
    from scheduler.progress import Progress

    interrupt_on_termination()  # a killed launch must still stop its local workers
    options = launch_options(args)
    # With --format json, stdout carries only the report; progress goes to stderr.
    stream = sys.stderr if args.format == "json" else sys.stdout

    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    if args.detach:
        refuse_detach(options)
        started = start_study(options, say=say)
        print(
            f"detached: study {started.study.name} has {len(started.queued)} queued trials; "
            f"run workers with `python -m worker`, follow with "
            f"`python -m scheduler status {started.study.name}`, "
            f"then `python -m scheduler report --study {started.study.name}`"
        )
        return 0
    report = launch(options, say=say, progress=Progress(stream, say))
    _print_report(report, args.format)
    if report.best is None and report.status != StudyStatus.CANCELLED:
        raise SeqsweepError(
            f"study {report.study}: every trial failed; "
            f"run `python -m scheduler report --study {report.study}` "
            "and see the error column in the trials table"
        )
    return 0


def launch_options(args: argparse.Namespace) -> LaunchOptions:
    """The options of a parsed ``launch``: every flag that names one (not --format, ...)."""
    names = flag_names()
    return LaunchOptions.from_flags(**{k: v for k, v in vars(args).items() if k in names})


def _existing_store(args: argparse.Namespace) -> ResultStore:
    """The results DB of a command that reads results: a missing SQLite file is an error."""
    return ResultStore(resolve_db_url(args.db), create=False)


def _report(args: argparse.Namespace) -> int:
    store = _existing_store(args)
    shows_importance = args.format != "csv" or args.html is not None
    report = study_report(store, args.study, args.top, importance=shows_importance)
    if args.html is not None:
        from scheduler.html_report import write_html_report  # plotly: 0.3 s to import

        written = write_html_report(store, report, args.html)
        # stdout stays pure JSON or CSV with those formats.
        print(f"HTML report: {written}", file=sys.stderr if args.format != "table" else sys.stdout)
    _print_report(report, args.format)
    return 0


def _status(args: argparse.Namespace) -> int:
    store = _existing_store(args)
    if args.study is None:
        _emit(studies_status(store), args.format, format_studies)
    else:
        _emit(study_status(store, args.study), args.format, format_study)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    _emit(cancel_study(_existing_store(args), args.study), args.format, format_cancel)
    return 0


def _export(args: argparse.Namespace) -> int:
    from scheduler.export import export_best, format_export

    store = _existing_store(args)
    _emit(export_best(store, args.study, args.out, args.trial), args.format, format_export)
    return 0


def _export_optuna(args: argparse.Namespace) -> int:
    from scheduler.optuna_export import export_optuna, format_optuna_export

    def say(done: OptunaExport) -> None:
        text = json.dumps(done.as_dict()) if args.format == "json" else format_optuna_export(done)
        print(text, flush=True)

    store = _existing_store(args)
    if not args.watch:
        export_optuna(store, args.study, args.storage, say=say)
        return 0
    interrupt_on_termination()
    try:
        export_optuna(
            store, args.study, args.storage, watch=True, interval_s=args.interval, say=say
        )
    except KeyboardInterrupt:  # the usual way to stop watching a study that runs on
        print("stopped watching; run the same command again to go on", file=sys.stderr)
    return 0


def _recover(args: argparse.Namespace) -> int:
    from scheduler.recovery import recover

    reports = recover(_existing_store(args), resolve_broker_url(args.broker), args.study)
    if args.format == "json":
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    for r in reports if args.format == "table" else ():
        changes = r.lines() or ["nothing lost"]
        print(f"study {r.study}: {'; '.join(changes)}; {r.sent} message(s) sent")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    url = resolve_db_url(args.db)
    applied = ResultStore(url, migrate=False).migrate()
    print(f"{mask_url(url)}: {'upgraded to' if applied else 'already at'} the newest schema")
    return 0


def _emit(result: Any, fmt: str, render: Callable[[Any], str]) -> None:
    """Print a command's result: its ``as_dict()`` as JSON with ``--format json``, else text."""
    print(json.dumps(result.as_dict(), indent=2) if fmt == "json" else render(result))


def _print_report(report: StudyReport, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(report.as_dict(), indent=2))
    elif fmt == "csv":
        sys.stdout.write(format_csv(report))
    else:
        print()
        print(format_report(report))
