"""``pi2sim sweep``: a grid of runs, in parallel, resumable, as one tidy table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import paths

GRID_HELP = """\
grid YAML:
  name: mixtral-memory            # optional
  base:                           # run keys (and policy options) shared by every point;
                                  # fidelity defaults to analytic in sweeps
    model: turbosparse-mixtral-47b
    decode_tokens: 128
    fidelity: analytic
  factors:                        # full factorial, first factor slowest; any --set key
    memory_gb: {from: 7, to: 19, step: 2}     # or {from, to, num}, or a list
    policy: [powerinfer2, llm-in-a-flash, llamacpp]
    device: [oneplus12, oneplus_ace2]
    # device.storage.latency: ["60 us", "110 us"]   (device.*/model.* overrides, policy options)
  # points: [{memory_gb: 7, policy: llamacpp}, ...]  instead of factors: listed points

Finished runs are journaled next to --out (<out>.journal.jsonl): run the same command again after
an interruption and it continues where it stopped. Runs already simulated by the same code
(any sweep) come from the cache in $PI2SIM_CACHE/runs (--no-cache to bypass).
"""


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "sweep", help="run a grid of configurations (parallel, resumable) into one Parquet/CSV table",
        epilog=GRID_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("grid", type=paths.input_file_arg("grid"), help="grid YAML (see below)")
    s.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    s.add_argument("--out", default=None, type=paths.output_file_arg("--out"), help="results table, .parquet (+ .csv beside it) or .csv (default <grid name>.parquet)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--dask", action="store_true", help="run on a local Dask cluster (--jobs workers) instead of a process pool")
    where.add_argument("--scheduler", default=None, metavar="ADDR", help="run on an existing Dask cluster, e.g. tcp://host:8786")
    s.add_argument("--no-cache", action="store_true", help="simulate every point even if an identical run is cached")
    s.add_argument("--report", default=None, type=paths.output_file_arg("--report"), metavar="FILE.html",
                   help="also write one self-contained HTML page: the plot, the table, the grid, the version and this command")
    s.add_argument("--find", default=None, metavar="CONDITION",
                   help="an inverse question: instead of the whole grid, find where CONDITION ('decode_tok_s >= 8') starts to hold along "
                   "the factor of --minimize / --maximize, by bisection, for every combination of the other factors")
    goal = s.add_mutually_exclusive_group()
    goal.add_argument("--minimize", default=None, metavar="FACTOR", help="with --find: the least value of this numeric factor that meets it (e.g. memory_gb)")
    goal.add_argument("--maximize", default=None, metavar="FACTOR", help="with --find: the greatest value that meets it")
    s.add_argument("--tolerance", type=float, default=None, help="with --find: stop when the boundary is known to within this (default: the factor's grid step)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)


def dask_executor(address: str | None, workers: int):
    """A concurrent.futures executor on a Dask cluster (local if ``address`` is None)."""
    from ..errors import InputError

    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError(None, "--dask", "dask.distributed installed (pip install 'pi2sim[dask]')") from None
    if address:
        client = Client(address)
    else:
        client = Client(LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None))
    return client, client.get_executor()


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..workflows.sweeps import load_grid, require_parquet, run_grid, write_table

    if args.jobs < 1:
        raise InputError(None, "--jobs", "a positive number of workers", args.jobs)
    grid = load_grid(args.grid)
    if args.find is not None or args.minimize or args.maximize:
        return _find(grid, args)
    out = Path(args.out) if args.out else Path(f"{grid.name}.parquet")
    if out.suffix not in (".parquet", ".csv"):
        raise InputError(None, "--out", "a path ending in .parquet or .csv", str(out))
    if out.suffix == ".parquet":
        require_parquet(out)  # before hours of runs, not after
    if args.report:
        from ..report.html import check_path

        check_path(args.report)
    journal = out.with_name(out.name + ".journal.jsonl")
    client = executor = None
    if args.dask or args.scheduler:
        client, executor = dask_executor(args.scheduler, args.jobs)
    try:
        table, stats = run_grid(grid, jobs=args.jobs, journal=journal, executor=executor, progress=not args.quiet, use_cache=not args.no_cache)
    finally:
        if client is not None:
            client.close()
    paths = write_table(table, out)
    ok = int((table["status"] == "ok").sum()) if len(table) else 0
    print(
        f"{grid.name}: {stats.total} points ({stats.simulated} simulated, {stats.from_cache} from the run cache, "
        f"{stats.from_journal} from the journal); {ok} ok, {stats.total - ok} refused or infeasible",
        file=sys.stderr,
    )
    if args.report:
        from dataclasses import asdict

        from ..report import html
        from ..workflows.reports import sweep_sections

        spec = {k: v for k, v in asdict(grid).items() if k != "source" and v is not None}
        html.write(args.report, f"pi2sim sweep: {grid.name}", sweep_sections(table, spec, grid.name), getattr(args, "argv", None))
        paths = [*paths, Path(args.report)]
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def _find(grid, args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..workflows.sweeps import find_boundary, write_table

    key = args.minimize or args.maximize
    if args.find is None or key is None:
        raise InputError(None, "--find", "both a condition (--find 'decode_tok_s >= 8') and the factor to search (--minimize or --maximize)")
    table = find_boundary(grid, args.find, key, minimize=args.minimize is not None, tolerance=args.tolerance, progress=not args.quiet)
    goal = "least" if args.minimize else "greatest"
    print(f"{grid.name}: the {goal} {key} where {args.find.strip()} ({int(table['runs'].sum())} runs)")
    print(table.to_string(index=False))
    if args.out:
        for p in write_table(table, Path(args.out)):
            print(f"wrote {p}", file=sys.stderr)
    return 0
