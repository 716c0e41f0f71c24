"""``tune-tl`` command line: turn flags into typed options and call the library.

Each command imports the library modules it runs inside its own function: together they pull in torch,
Ray, Optuna, timm, scikit-learn and matplotlib (about ten seconds on a laptop), and ``tune-tl --help`` or
a mistyped flag must answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from tune_tl.config.shipped import IMAGEFOLDER, shipped_space, shipped_spaces
from tune_tl.config.space import check_seed, load_space
from tune_tl.config.spec import DEFAULT_TIME_BUDGET, NO_LIMIT, with_budget
from tune_tl.errors import TuneTLError
from tune_tl.search.options import SAMPLERS, SCHEDULERS, SearchOptions


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, its one line already printed)
        return exc.code
    args.argv = ["tune-tl", *(sys.argv[1:] if argv is None else argv)]  # recorded in search.json
    _setup_logging(getattr(args, "verbose", False))
    try:
        return args.func(args)
    except TuneTLError as exc:
        print(f"tune-tl: error: {exc}", file=sys.stderr)
        return 2


def _seconds_or_none(text: str) -> float | str:
    """``--time-budget``: a number of seconds, or ``none`` (no limit; kept as the word until the budget is applied)."""
    if text.strip().lower() == "none":
        return NO_LIMIT
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'none', got {text!r}") from None


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as the one line every tune-tl error is (no usage block), exit 2."""

    def error(self, message: str):
        self.exit(2, f"tune-tl: error: {self.prog}: {message} (see {self.prog} --help)\n")


#: ``--space`` of the commands that rebuild an existing search's space (a results folder never supplies code).
SPACE_HELP = ("the search's .py space file (needed only for a .py space: code is never imported from a results folder); "
              "its SHA-256 must be the one search.json records")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="tune-tl", description="Hyperparameter search over transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)

    s = sub.add_parser("search", help="run a search (default: the bundled offline space)")
    s.add_argument("space", nargs="?", help="search-space file (.yaml or .py) or a shipped space's name (tune-tl spaces); "
                                           "default: imagefolder with --data, else default (digits)")
    s.add_argument("--samples", type=int, help="number of trials (overrides budget.samples)")
    s.add_argument("--max-epochs", type=int, help="epoch budget per trial and ASHA max_t (overrides budget.max_epochs)")
    s.add_argument("--grace-period", type=int, help="ASHA grace period in epochs (overrides budget.grace_period)")
    s.add_argument("--reduction-factor", type=float, help="ASHA reduction factor (overrides budget.reduction_factor)")
    s.add_argument("--data", metavar="PATH", help="image folder to search on (overrides data.path; data.source becomes imagefolder "
                                                  "unless the space says cifar10: then the cifar-10-batches-py folder)")
    s.add_argument("--skip-bad-images", action="store_true",
                   help="leave out bad image files (listed in skipped_images.txt) instead of stopping")
    s.add_argument("--keep-duplicates", action="store_true",
                   help="keep val/test images byte-identical to a training image (default: dropped; listed in duplicates.csv either way)")
    s.add_argument("--seed", type=int, help="seed for the data split, the sampler and training (overrides seed)")
    s.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial; also its torch threads (default 1)")
    s.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial, fractions allowed (default 0)")
    s.add_argument("--workers-per-trial", type=int, default=1,
                   help="data-parallel (DDP) workers per trial, sharing each batch: gloo on CPU, NCCL with one GPU each; "
                        "--gpus-per-trial 2+ means one worker per GPU (default 1)")
    s.add_argument("--concurrency", type=int, help="max trials at once (default: as many as resources allow)")
    s.add_argument("--scheduler", choices=SCHEDULERS, default=SCHEDULERS[0],
                   help="cost-asha (default: ASHA with rungs in predicted training cost), asha (epoch rungs), pasha (progressive "
                        "maximum budget) or fifo: no early stopping, for comparison")
    s.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0],
                   help="Optuna sampler: tpe (default; expected gain per predicted cost) or random, for comparison")
    s.add_argument("--no-textbook-start", dest="textbook_start", action="store_false",
                   help="do not start with the textbook recipes (fine-tune, linear probe, LP→FT); sample every trial")
    s.add_argument("--no-probes", dest="probes", action="store_false",
                   help="no stage-0 linear probes (one per backbone, before any fine-tune); every trial goes through Ray Tune")
    s.add_argument("--time-budget", type=_seconds_or_none, metavar="SECONDS", dest="time",
                   help=f"stop starting trials and end running ones after this many seconds, or 'none' for no limit "
                        f"(overrides budget.time; default {DEFAULT_TIME_BUDGET:g})")
    s.add_argument("--keep-checkpoints", type=int, metavar="K",
                   help="keep the best-epoch weights of the top K trials once they end; delete the other trials' checkpoints "
                        "(overrides budget.keep_checkpoints, default 3)")
    s.add_argument("--address", help="Ray cluster to join, e.g. 10.0.0.5:6379 or ray://head:10001 (default: $RAY_ADDRESS, else local Ray)")
    s.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                   help="always run the backbone, even when it is frozen "
                        "(default: cache frozen features and a frozen prefix's activations)")
    s.add_argument("--output", default="results",
                   help="where results go: a folder (shared by all nodes on a cluster) or an s3://, gs:// URI (default ./results)")
    s.add_argument("--name", help="search name, the subfolder of --output (default search-DATE-TIME)")
    s.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker dies, each from its last epoch (default 2)")
    s.add_argument("--recheck", type=int, metavar="K",
                   help="after the search, re-run the top K configs with 2 more seeds; the winner is the best mean")
    s.add_argument("--verbose", action="store_true",
                   help="Ray's own output (tables, trial configs, logs) on the terminal instead of the progress view")
    s.add_argument("--warm-start", nargs="+", metavar="DIR", default=[],
                   help="earlier searches on the same data whose finished trials seed the new Optuna study")
    s.set_defaults(func=_search)

    r = sub.add_parser("resume", help="continue an interrupted search, or extend a finished one")
    r.add_argument("dir", help="the search's folder (<output>/<name>)")
    r.add_argument("--samples", type=int, help="total number of trials wanted (default: the search's own budget)")
    r.add_argument("--space", metavar="FILE", help=SPACE_HELP)
    r.set_defaults(func=_resume)

    w = sub.add_parser("spaces", help="list the shipped search spaces, or print / copy one to edit")
    w.add_argument("name", nargs="?", help="a shipped space (e.g. imagefolder); without it, list them")
    w.add_argument("--to", metavar="FILE", help="write the space to FILE instead of printing it")
    w.set_defaults(func=_spaces)

    v = sub.add_parser("validate", help="check a search-space file without running a search (a .py file is imported: its code runs)")
    v.add_argument("space",
                   help="search-space file (.yaml or .py; a .py file is executed, like any Python script) or a shipped space's name")
    v.set_defaults(func=_validate)

    d = sub.add_parser("dashboard", help="open the search's Optuna study in optuna-dashboard, on 127.0.0.1")
    d.add_argument("dir", help="the search's results folder (<output>/<name>, or an s3:// or gs:// URI)")
    d.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    d.set_defaults(func=_dashboard)

    r = sub.add_parser("report", help="leaderboard, PNG plots and an HTML page for a search (running or finished)")
    r.add_argument("dir", help="the search's results folder (<output>/<name>)")
    r.add_argument("--top", type=int, default=10, help="trials in the leaderboard (default 10)")
    r.set_defaults(func=_report)

    t = sub.add_parser("retrain", help="retrain a trial's config (default: the best) to the full budget and save it")
    t.add_argument("dir", help="the search's results folder (<output>/<name>)")
    t.add_argument("--trial", help="trial id to retrain (default: the best completed or pruned trial)")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--train-on", choices=["train", "train+val"], default="train",
                   help="train (default) or train+val: also train on the validation images (then only a test split evaluates it)")
    t.add_argument("--space", metavar="FILE", help=SPACE_HELP)
    t.set_defaults(func=_retrain)

    k = sub.add_parser("rank", help="rank candidate backbones on the data: LogME, linear-probe accuracy, cost")
    k.add_argument("space", nargs="?",
                   help="search-space file; its data and backbone.name (default: bundled digits, the Lite0/1/2 portfolio)")
    k.add_argument("--data", metavar="PATH",
                   help="image folder to rank on (overrides data.path; data.source becomes imagefolder unless the space says cifar10)")
    k.add_argument("--output", metavar="FILE", help="also write the table to FILE (.csv or .parquet)")
    k.add_argument("--backbones", nargs="+", metavar="NAME", help="candidates to rank (default: the space's backbone.name)")
    k.add_argument("--resolution", type=int, help="input side in pixels (default: the largest resolution the space allows)")
    k.set_defaults(func=_rank, skip_bad_images=False)

    e = sub.add_parser("export", help="write a trial's best-epoch weights as a model folder (no retraining)")
    e.add_argument("dir", help="the search's results folder (<output>/<name>)")
    e.add_argument("--trial", help="trial id to export (default: the best completed or pruned trial)")
    e.add_argument("--to", metavar="PATH", help="model folder to write (default <search>/models/<trial_id>-best); "
                   "an existing one is refused unless --force")
    e.add_argument("--force", action="store_true", help="replace an existing --to folder as a whole")
    e.add_argument("--space", metavar="FILE", help=SPACE_HELP)
    e.add_argument("--ensemble", action="store_true", help="export the ensemble chosen on val (every member) as one folder predict "
                   "runs (the default when it beats the best single trial on val by a point or more)")
    e.add_argument("--single", action="store_true", help="export the best single trial even when the ensemble is the default")
    e.set_defaults(func=_export)

    n = sub.add_parser("ensemble", help="select a weighted ensemble of a finished search's probes and kept trials on val")
    n.add_argument("dir", help="the search's results folder (<output>/<name>)")
    n.set_defaults(func=_ensemble)

    p = sub.add_parser("predict", help="classify images with a model folder written by export or retrain")
    p.add_argument("model", help="model folder (from export or retrain) or its model.pt")
    p.add_argument("images", nargs="+", metavar="PATH", help="image files, or folders (searched recursively)")
    p.add_argument("--output", metavar="FILE", help="write path,label,confidence to FILE (.csv or .parquet) instead of stdout")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out images that cannot be read (listed on stderr, and in FILE.skipped.txt with --output) "
                        "instead of stopping")
    p.set_defaults(func=_predict)
    return parser


def _setup_logging(verbose: bool) -> None:
    """Quiet by default: warnings from libraries, and our own INFO lines (data, backbone, where results go).
    ``--verbose``: INFO from every library, as before the progress view."""
    handler = _StderrNow()
    handler.setFormatter(_Format("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("tune_tl").setLevel(logging.INFO)


class _StderrNow(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, so log lines print above the live progress view (which
    redirects it) instead of through it."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Format(logging.Formatter):
    """INFO lines are plain messages; warnings and errors say what and from where."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        if record.levelno >= logging.WARNING:
            return text.replace(record.message, f"{record.levelname} {record.name}: {record.message}", 1)
        return text


def _dashboard(args) -> int:
    from tune_tl.analysis.dashboard import serve_dashboard

    serve_dashboard(args.dir, port=args.port, on_ready=lambda line: print(line, flush=True))
    return 0


def _report(args) -> int:
    from tune_tl.analysis.report import write_report

    text, files = write_report(args.dir, top=args.top)
    print(text)
    print("Report: " + ", ".join(str(f) for f in files))
    return 0


def _retrain(args) -> int:
    from tune_tl.analysis.retrain import retrain

    saved = retrain(args.dir, args.trial, args.device, train_on=args.train_on, space=args.space)
    m = saved.metrics
    if m["evaluated_on"] is None:
        print(f"Retrained {m['epochs']} epoch(s) on train+val; no test split in this data, so nothing held out to evaluate on")
    else:
        note = "" if m["evaluated_on"] == "test" else " (no test split in this data: validation set, which the search also used)"
        print(f"Retrained {m['epochs']} epoch(s) on {m['train_on']}: {m['evaluated_on']} accuracy {m['accuracy']:.4f}, "
              f"loss {m['loss']:.4f}{note}")
    print(f"Saved model folder {saved.directory}")
    return 0


def _export(args) -> int:
    from tune_tl.analysis.ensemble_export import export_ensemble
    from tune_tl.analysis.export import export_model
    from tune_tl.store.ranking import ENSEMBLE_SHIP_MARGIN, ensemble_ships
    from tune_tl.store.search_run import SearchRun

    if args.ensemble and (args.trial or args.single):
        raise TuneTLError(f"--ensemble exports every member of the ensemble: leave out {'--trial' if args.trial else '--single'}")
    chosen = args.ensemble or args.trial or args.single
    by_default = not chosen and ensemble_ships(SearchRun.open(args.dir, require_metadata=True).ensemble_record)
    if args.ensemble or by_default:
        saved = export_ensemble(args.dir, args.to, force=args.force)
        why = (f" (the default: {ENSEMBLE_SHIP_MARGIN:.0%} or more above the best single trial on val; --single exports that trial)"
               if by_default else "")
        print(f"Exported the ensemble of {len(saved.info['members'])} member(s) (val_acc {saved.info['val_acc']:.4f}) "
              f"to {saved.directory}{why}")
        return 0
    saved = export_model(args.dir, args.trial, args.to, space=args.space, force=args.force)
    i = saved.info
    print(f"Exported trial {i['trial_id']} at its best epoch {i['epoch']} (val_acc {i['val_acc']:.4f}) to {saved.directory}")
    return 0


def _ensemble(args) -> int:
    from tune_tl.search.ensemble import ensemble_search
    from tune_tl.search.summary import ensemble_line
    from tune_tl.store.search_run import SearchRun

    run = SearchRun.open(args.dir, require_metadata=True)
    with run.lock():
        print(ensemble_line(ensemble_search(run).record()))
    print(f"Recorded in {run.metadata_file} (ensemble)")
    return 0


def _rank(args) -> int:
    from tune_tl.data.sources import with_data_path
    from tune_tl.search.rank import PORTFOLIO, RankOptions, format_table, rank_backbones

    spec = load_space(args.space)
    spec = dataclasses.replace(spec, data=with_data_path(spec.data, args.data))
    backbones = tuple(args.backbones or (() if args.space else PORTFOLIO))
    table = rank_backbones(spec, RankOptions(backbones=backbones, resolution=args.resolution, output=args.output))
    print(format_table(table))
    if args.output:
        print(f"Written: {args.output}")
    return 0


def _predict(args) -> int:
    from tune_tl.analysis.predict import predict_files, write_predictions, write_skipped

    if args.output and not args.output.endswith((".csv", ".parquet")):
        raise TuneTLError(f"--output {args.output}: give a .csv or .parquet file name")
    out = predict_files(args.model, args.images, skip_bad_images=args.skip_bad_images)
    for image, reason in out.skipped:
        print(f"tune-tl: skipped {image}: {reason}", file=sys.stderr)
    if args.output:
        print(f"Wrote {len(out.rows)} prediction(s) to {write_predictions(out.rows, args.output)}")
        if out.skipped:
            print(f"Skipped {len(out.skipped)} unreadable image(s), listed in {write_skipped(out.skipped, args.output)}")
        return 0
    for image, label, prob in out.rows:
        print(f"{image}\t{label}\t{prob:.4f}")
    return 0


def _search(args) -> int:
    from tune_tl.data.sources import with_data_path
    from tune_tl.search.run import run_search
    from tune_tl.search.summary import format_summary

    space = args.space or (IMAGEFOLDER if args.data else None)  # --data alone: the image-folder defaults
    spec = load_space(space)
    spec = with_budget(spec, samples=args.samples, max_epochs=args.max_epochs, grace_period=args.grace_period,
                       reduction_factor=args.reduction_factor, time=args.time, keep_checkpoints=args.keep_checkpoints)
    if args.seed is not None:
        spec = dataclasses.replace(spec, seed=check_seed(args.seed, "--seed"))
    spec = dataclasses.replace(spec, data=with_data_path(spec.data, args.data, args.skip_bad_images, args.keep_duplicates))
    options = SearchOptions(
        output=args.output,
        name=args.name,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        concurrency=args.concurrency,
        address=args.address,
        scheduler=args.scheduler,
        sampler=args.sampler,
        textbook_start=args.textbook_start,
        probes=args.probes,
        feature_cache=args.feature_cache,
        max_failures=args.max_failures,
        verbose=int(args.verbose),
        warm_start=tuple(args.warm_start),
        workers_per_trial=args.workers_per_trial,
        recheck=args.recheck or 0,
        command_line=tuple(args.argv),
    )
    if args.recheck is not None and args.recheck < 1:
        raise TuneTLError(f"--recheck must be at least 1, got {args.recheck}")
    summary = run_search(spec, options)
    print(format_summary(summary))
    if args.recheck:
        _print_recheck(summary.path, args.recheck, spec.source if spec.space_fn is not None else None)
    return 0


def _print_recheck(path, k: int, space: str | None) -> None:
    """Re-run the top ``k`` configs with more seeds and show mean ± sd, winner first; ``space``: the ``.py`` space
    file this command line named (the same search's, so code still comes only from the command line)."""
    from tune_tl.search.recheck import EXTRA_SEEDS, recheck_top
    from tune_tl.store.ranking import shipped_row
    from tune_tl.store.search_run import SearchRun

    table = recheck_top(path, k, space=space)
    print(f"Rechecked the top {len(table)} config(s) with {EXTRA_SEEDS} more seeds (best val_acc, mean ± sd over runs):")
    for row in table.itertuples():
        print(f"  {row.trial_id}: {row.mean:.4f} ± {row.sd:.4f} over {row.runs} runs (search: {row.search_val_acc:.4f})")
    run = SearchRun(path)
    winner = shipped_row(run.trials(), run.recheck())
    why = "by mean" if winner["trial_id"] == table["trial_id"].iloc[0] else f"a probe, {winner['best_val_acc']:.4f} above the best mean"
    print(f"Winner: {winner['trial_id']} ({why}; tune-tl export takes it)")


def _resume(args) -> int:
    from tune_tl.search.resume import resume_search
    from tune_tl.search.summary import format_summary

    summary = resume_search(args.dir, samples=args.samples, space=args.space)
    print(format_summary(summary))
    return 0


def _validate(args) -> int:
    spec = load_space(args.space)
    names = [p.name for p in spec.params] if spec.space_fn is None else ["space(trial)"]
    data = spec.data.source + (f" ({spec.data.path})" if spec.data.path else "")
    print(f"{spec.source}: OK — data {data}, backbone {' | '.join(spec.backbone.names)} ({spec.backbone.weights}), "
          f"{spec.budget.samples} trials × ≤{spec.budget.max_epochs} epochs; parameters: {', '.join(names)}")
    if spec.space_fn is not None:
        print("(a .py space is Python code: validate imported it and ran space(trial) on a throwaway study)")
    return 0


def _spaces(args) -> int:
    spaces = shipped_spaces()
    if args.name is None:
        for name, file in spaces.items():
            first = next((line.lstrip("# ").strip() for line in file.read_text().splitlines() if line.startswith("#")), "")
            print(f"{name:<12} {first}")
        return 0
    file = shipped_space(args.name)
    if file is None:
        raise TuneTLError(f"no shipped space {args.name!r}; shipped: {', '.join(spaces)}")
    if args.to is None:
        print(file.read_text(), end="")
        return 0
    target = Path(args.to)
    if target.exists():
        raise TuneTLError(f"--to {target}: already exists; choose another file name")
    target.write_text(file.read_text())
    print(f"Wrote {target}; check it with: tune-tl validate {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
