"""``tune-tl`` command line: turn flags into typed options and call the library."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from tune_tl.errors import TuneTLError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = ["tune-tl", *(sys.argv[1:] if argv is None else argv)]  # recorded in search.json
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except TuneTLError as exc:
        print(f"tune-tl: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tune-tl", description="Hyperparameter search over transfer learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="run a search (default: the bundled offline space)")
    s.add_argument("space", nargs="?", help="search-space file (.yaml or .py); default: search_spaces/default.yaml")
    s.add_argument("--samples", type=int, help="number of trials (overrides budget.samples)")
    s.add_argument("--max-epochs", type=int, help="epoch budget per trial and ASHA max_t (overrides budget.max_epochs)")
    s.add_argument("--grace-period", type=int, help="ASHA grace period in epochs (overrides budget.grace_period)")
    s.add_argument("--reduction-factor", type=float, help="ASHA reduction factor (overrides budget.reduction_factor)")
    s.add_argument("--data", metavar="PATH", help="image folder (or cifar-10-batches-py folder) to search on (overrides data.source and data.path)")
    s.add_argument("--skip-bad-images", action="store_true", help="leave out bad image files (listed in skipped_images.txt) instead of stopping")
    s.add_argument("--seed", type=int, help="seed for the data split, the sampler and training (overrides seed)")
    s.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial; also its torch threads (default 1)")
    s.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial, fractions allowed (default 0)")
    s.add_argument("--workers-per-trial", type=int, default=1, help="data-parallel (DDP) workers per trial, sharing each batch: gloo on CPU, NCCL with one GPU each; --gpus-per-trial 2+ means one worker per GPU (default 1)")
    s.add_argument("--concurrency", type=int, help="max trials at once (default: as many as resources allow)")
    s.add_argument("--scheduler", choices=["asha", "fifo"], default="asha", help="asha (default) or fifo: no early stopping, for comparison")
    s.add_argument("--sampler", choices=["tpe", "random"], default="tpe", help="Optuna sampler: tpe (default) or random, for comparison")
    s.add_argument("--address", help="Ray cluster to join, e.g. 10.0.0.5:6379 or ray://head:10001 (default: $RAY_ADDRESS, else local Ray)")
    s.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                   help="always run the backbone, even when it is frozen (default: cache frozen features)")
    s.add_argument("--output", default="results", help="where results go: a folder (shared by all nodes on a cluster) or an s3://, gs:// URI (default ./results)")
    s.add_argument("--name", help="search name, the subfolder of --output (default search-DATE-TIME)")
    s.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker dies, each from its last epoch (default 2)")
    s.set_defaults(func=_search)

    r = sub.add_parser("resume", help="continue an interrupted search, or extend a finished one")
    r.add_argument("dir", help="the search's folder (<output>/<name>)")
    r.add_argument("--samples", type=int, help="total number of trials wanted (default: the search's own budget)")
    r.set_defaults(func=_resume)

    v = sub.add_parser("validate", help="check a search-space file without running anything")
    v.add_argument("space", help="search-space file (.yaml or .py)")
    v.set_defaults(func=_validate)

    r = sub.add_parser("report", help="leaderboard, PNG plots and an HTML page for a search (running or finished)")
    r.add_argument("dir", help="the search's results folder (<output>/<name>)")
    r.add_argument("--top", type=int, default=10, help="trials in the leaderboard (default 10)")
    r.set_defaults(func=_report)

    t = sub.add_parser("retrain", help="retrain a trial's config (default: the best) to the full budget and save it")
    t.add_argument("dir", help="the search's results folder (<output>/<name>)")
    t.add_argument("--trial", help="trial id to retrain (default: the best completed or pruned trial)")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.set_defaults(func=_retrain)

    p = sub.add_parser("predict", help="classify image files with a model saved by retrain")
    p.add_argument("model", help="model folder (<search>/models/<trial_id>) or its model.pt")
    p.add_argument("images", nargs="+", help="image files")
    p.set_defaults(func=_predict)
    return parser


def _report(args) -> int:
    from tune_tl.analysis.report import write_report

    text, files = write_report(args.dir, top=args.top)
    print(text)
    print("Report: " + ", ".join(str(f) for f in files))
    return 0


def _retrain(args) -> int:
    from tune_tl.analysis.retrain import retrain

    saved = retrain(args.dir, args.trial, args.device)
    m = saved.metrics
    note = "" if m["evaluated_on"] == "test" else " (no test split in this data: validation set, which the search also used)"
    print(f"Retrained {m['epochs']} epoch(s): {m['evaluated_on']} accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}{note}")
    print(f"Saved {saved.directory / 'model.pt'} and {saved.directory / 'model.json'}")
    return 0


def _predict(args) -> int:
    from tune_tl.analysis.retrain import predict

    for image, label, prob in predict(args.model, args.images):
        print(f"{image}\t{label}\t{prob:.4f}")
    return 0


def _search(args) -> int:
    from tune_tl.search.run import SearchOptions, run_search
    from tune_tl.config.space import load_space

    spec = load_space(args.space)
    budget = {k: getattr(args, k) for k in ("samples", "max_epochs", "grace_period", "reduction_factor") if getattr(args, k) is not None}
    if budget:
        spec = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, **budget))
        spec = _revalidated(spec)
    if args.seed is not None:
        spec = dataclasses.replace(spec, seed=args.seed)
    spec = _data_overrides(spec, args)
    options = SearchOptions(
        output=args.output,
        name=args.name,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        concurrency=args.concurrency,
        address=args.address,
        scheduler=args.scheduler,
        sampler=args.sampler,
        feature_cache=args.feature_cache,
        max_failures=args.max_failures,
        workers_per_trial=args.workers_per_trial,
        command_line=tuple(args.argv),
    )
    summary = run_search(spec, options)
    print(_format_summary(summary))
    return 0


def _data_overrides(spec, args):
    """``--data PATH``: an image folder, or CIFAR-10 when PATH holds the torchvision batch files."""
    from tune_tl.data.cifar10 import find_root

    data = spec.data
    if args.data is not None:
        source = "cifar10" if find_root(args.data) is not None else "imagefolder"
        data = dataclasses.replace(data, source=source, path=args.data)
    if args.skip_bad_images:
        data = dataclasses.replace(data, skip_bad_images=True)
    return dataclasses.replace(spec, data=data)


def _resume(args) -> int:
    from tune_tl.search.resume import resume_search

    summary = resume_search(args.dir, samples=args.samples)
    print(_format_summary(summary))
    return 0


def _revalidated(spec):
    """Run the space loader's budget checks on CLI overrides (same messages, flag names)."""
    from tune_tl.config.space import parse_settings

    budget = dataclasses.asdict(spec.budget)
    parse_settings({"budget": budget}, "command line", allow_params=False)
    return spec


def _validate(args) -> int:
    from tune_tl.config.space import load_space

    spec = load_space(args.space)
    names = [p.name for p in spec.params] if spec.space_fn is None else ["space(trial)"]
    data = spec.data.source + (f" ({spec.data.path})" if spec.data.path else "")
    print(f"{spec.source}: OK — data {data}, backbone {spec.backbone.name} ({spec.backbone.weights}), "
          f"{spec.budget.samples} trials × ≤{spec.budget.max_epochs} epochs; parameters: {', '.join(names)}")
    return 0


def _format_summary(summary) -> str:
    c = summary.counts
    lines = [
        "",
        f"Search finished: {c['completed']} completed, {c['pruned']} pruned, {c['diverged']} diverged, {c.get('oom', 0)} out of memory, {c['error']} failed.",
    ]
    if summary.best:
        best = summary.best
        lines.append(f"Best trial {best['trial_id']}: val_acc {best['best_val_acc']:.4f} (epoch {best['best_epoch']}, {best['status']})")
        skip = {"trial_id", "status", "best_val_acc", "last_val_acc", "best_epoch", "epochs_run", "wall_seconds", "error", "node_id", "node_ip"}
        lines.append("  config: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.items() if k not in skip))
    if summary.skipped_images:
        lines.append(f"Skipped {summary.skipped_images} bad image file(s); listed in {summary.path / 'skipped_images.txt'}")
    lines.append(f"Results (Parquet): {summary.path / 'trials'}  and  {summary.path / 'epochs'}")
    lines.append(f"Read them with: pandas.read_parquet('{summary.path / 'trials'}')")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
