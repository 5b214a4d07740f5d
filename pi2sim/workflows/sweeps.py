"""Design-space sweeps: many runs of one base scenario, one tidy row each.

A grid is a base configuration plus factors (any ``--set`` key: run keys such as ``memory_gb`` or
``policy``, ``device.*`` and ``model.*`` overrides, policy options), expanded as a full factorial
or given as listed points. Each point becomes a :class:`~pi2sim.config.RunConfig`, validated
before anything runs, so a typo fails at once with the usual one-line error.

Nothing is lost and nothing is done twice:

* every finished run is appended as one JSON line to a journal next to the output
  (``<out>.journal.jsonl``, flushed and fsynced), so a killed sweep resumes where it stopped;
* every run's row is also kept in a result cache keyed by the resolved configuration and the
  code version (``$PI2SIM_CACHE/runs/``), so a point already simulated by any sweep is reused;
* the final table (Parquet and CSV) is written atomically and sorted by point, so it does not
  depend on the order in which parallel runs finished.

Runs execute in worker processes through any ``concurrent.futures`` executor: a local process
pool by default, or a Dask cluster's executor (``Client.get_executor()``), which has the same API.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import resources, yamlio
from ..config import RunConfig, apply_values, config_hash
from ..errors import ConfigurationRefused, InputError
from ..report.summary import summary_row
from ..schema import to_dict

GRID_KEYS = {"base", "factors", "points", "name", "description"}
MAX_POINTS = 1_000_000  # a grid beyond this is refused before anything is built: split it


# --------------------------------------------------------------------------- grid
@dataclass
class Grid:
    base: dict[str, Any]
    factors: dict[str, list[Any]] = field(default_factory=dict)
    points: list[dict[str, Any]] | None = None
    name: str = "sweep"
    source: str = "<grid>"

    def expand(self) -> list[dict[str, Any]]:
        """Every point as {factor: value}: the listed points, or the full factorial (first factor
        slowest, as written)."""
        if self.points is not None:
            return [dict(p) for p in self.points]
        keys = list(self.factors)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.factors[k] for k in keys))]

    def configs(self) -> list[RunConfig]:
        base = base_config(self.base, self.source)
        out = []
        for i, point in enumerate(self.expand()):
            out.append(apply_values(base, point, source=f"{self.source}: point {i} {point}"))
        return out

    def validate(self) -> None:
        """Build every point's specs and policy (device/model overrides, policy options): a typo
        anywhere fails before the first run."""
        from ..simulation import build

        seen = set()
        points = self.expand()
        for i, cfg in enumerate(self.configs()):
            key = config_hash(to_dict(cfg))
            if key in seen:
                continue
            seen.add(key)
            try:
                build(cfg)
            except ConfigurationRefused:
                continue  # the engine cannot run this point (a model it does not run, a phone without its NPU): a row, not an error
            except InputError as exc:
                # name the grid and the point; keep what the spec loader said about the key
                where = exc.source if exc.source and exc.source != self.source else None
                key_path = ": ".join(x for x in (where, exc.key) if x)
                raise InputError(f"{self.source}: point {i} {points[i]}", key_path or None, exc.expected, exc.got) from None


def _range(spec: dict, source: str, key: str) -> list[Any]:
    """``{from, to, step}`` (inclusive) or ``{from, to, num}`` (evenly spaced, inclusive)."""
    allowed = {"from", "to", "step", "num"}
    if not set(spec) <= allowed or "from" not in spec or "to" not in spec or ("step" in spec) == ("num" in spec):
        raise InputError(source, f"factors.{key}", "a list, or a range {from, to, step} or {from, to, num}", spec)
    lo, hi = spec["from"], spec["to"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        raise InputError(source, f"factors.{key}", "numeric from/to", spec)
    if "num" in spec:
        n = spec["num"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > MAX_POINTS:
            raise InputError(source, f"factors.{key}.num", f"a positive integer up to {MAX_POINTS:,}", n)
        vals = np.linspace(lo, hi, n)
    else:
        step = spec["step"]
        if not isinstance(step, (int, float)) or step <= 0 or hi < lo:
            raise InputError(source, f"factors.{key}.step", "a positive step with from <= to", spec)
        n = int(np.floor((hi - lo) / step + 1e-9)) + 1
        if n > MAX_POINTS:
            raise InputError(source, f"factors.{key}", f"a range of at most {MAX_POINTS:,} values; this one has {n:,} (a larger step)", spec)
        vals = lo + step * np.arange(n)
    if all(isinstance(v, int) for v in (lo, hi, spec.get("step", 1))) and "num" not in spec:
        return [int(v) for v in vals]
    return [round(float(v), 12) for v in vals]


def parse_grid(data: Any, source: str = "<grid>") -> Grid:
    if not isinstance(data, dict):
        raise InputError(source, None, "a mapping with base and factors (or points)")
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise InputError(source, sorted(unknown)[0], f"one of {', '.join(sorted(GRID_KEYS))}")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise InputError(source, "base", "a mapping of run keys (and options)", base)
    factors_raw = data.get("factors")
    points = data.get("points")
    if (factors_raw is None) == (points is None):
        raise InputError(source, "factors", "either factors (a full factorial) or points (listed), not both or neither")
    factors: dict[str, list[Any]] = {}
    if factors_raw is not None:
        if not isinstance(factors_raw, dict) or not factors_raw:
            raise InputError(source, "factors", "a non-empty mapping of key: [values] or key: {from, to, step}", factors_raw)
        for k, v in factors_raw.items():
            if isinstance(v, dict):
                factors[k] = _range(v, source, k)
            elif isinstance(v, list) and v:
                factors[k] = list(v)
            else:
                raise InputError(source, f"factors.{k}", "a non-empty list or a range mapping", v)
    if points is not None and (not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points)):
        raise InputError(source, "points", "a non-empty list of {key: value} mappings", points)
    size = len(points) if points is not None else math.prod(len(v) for v in factors.values())
    if size > MAX_POINTS:
        shape = " x ".join(f"{len(v):,} {k}" for k, v in factors.items()) if points is None else "listed"
        raise InputError(source, "factors" if points is None else "points",
                         f"at most {MAX_POINTS:,} points; this grid has {size:,} ({shape}): split it into several grids, "
                         "e.g. one per value of its first factor")
    grid = Grid(base=base, factors=factors, points=points, name=str(data.get("name", Path(source).stem)), source=source)
    grid.validate()  # every point, now, before anything runs
    return grid


def load_grid(path: str | Path) -> Grid:
    p = Path(path)
    if not p.is_file():
        raise InputError(p, None, "an existing grid YAML file")
    return parse_grid(yamlio.load(p), str(p))


def base_config(base: dict[str, Any], source: str) -> RunConfig:
    base = dict(base)
    options = base.pop("options", None) or {}
    if not isinstance(options, dict):
        raise InputError(source, "base.options", "a mapping of policy options", options)
    # sweeps run many configurations: the analytic tier unless the grid asks for another
    base.setdefault("fidelity", "analytic")
    return apply_values(RunConfig(), {**base, **options}, source=f"{source}: base")


# --------------------------------------------------------------------------- code version
_CODE_VERSION: str | None = None


def code_version() -> str:
    """Hash of the package's source and shipped data (devices, models, profiles): a cached run is
    reused only by the same code on the same inputs."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        h = hashlib.sha256()
        pkg = Path(__file__).resolve().parents[1]  # the whole pi2sim package, not only workflows/
        files = sorted(pkg.rglob("*.py"))
        for sub in ("devices", "models"):
            files += sorted(resources.data_dir(sub).glob("*.yaml"))
        files += sorted((resources.data_dir("traces") / "profiles").glob("*.yaml"))
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
        _CODE_VERSION = h.hexdigest()[:12]
    return _CODE_VERSION


# --------------------------------------------------------------------------- one run
METRICS = [
    "status", "decode_tok_s", "prefill_tok_s", "ttft_ms", "tbt_mean_ms", "tbt_p50_ms", "tbt_p90_ms", "tbt_p99_ms",
    "peak_memory_gb", "memory_budget_gb", "flash_bytes_per_token", "flash_reads_per_token", "flash_read_gbs",
    "neuron_cache_hit_rate", "compute_share", "io_stall_share", "other_share",
    "energy_j_per_token", "power_mean_w", "power_peak_w", "battery_pct_per_hour", "reason",  # energy: devices with a power model
]


def _worker_init() -> None:
    """A sweep worker ends with its parent, however the parent ends (Linux: PR_SET_PDEATHSIG), and
    leaves Ctrl-C to the parent, which stops it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the parent's shutdown stops the workers


def run_point(cfg: RunConfig) -> dict[str, Any]:
    """Simulate one configuration (in a worker process); a run the engine refuses is a row too."""
    from ..policies._common import EngineRefused
    from ..simulation import run

    try:
        r = run(cfg)
    except EngineRefused as exc:
        return {"status": "refused", "reason": exc.expected}
    except ConfigurationRefused as exc:  # a weight format, a phone without the engine's NPU
        return {"status": "refused", "reason": exc.line()}
    except InputError as exc:
        # the grid was validated up front, so this is a point that cannot run as configured
        # (e.g. the model does not fit the memory): a result of the design space, not a typo
        return {"status": "infeasible", "reason": str(exc)}
    return summary_row(r.summary)


def run_key(cfg: RunConfig) -> str:
    return f"{config_hash(to_dict(cfg))}-{code_version()}"


def _cache_dir() -> Path:
    return resources.cache_dir() / "runs"


def _cache_get(key: str) -> dict | None:
    """A cached run's row, or None; a damaged or foreign entry is discarded (one line) and rerun."""
    from ..diskcache import discard, open_envelope

    p = _cache_dir() / f"{key}.json"
    try:
        data = p.read_bytes()
    except OSError:
        return None
    try:
        row = json.loads(open_envelope(data, key))
        if not isinstance(row, dict) or "status" not in row:
            raise ValueError("not a run's row")
        return row
    except (ValueError, UnicodeDecodeError) as exc:
        discard(p, str(exc))
        return None


def _cache_put(key: str, row: dict) -> None:
    from ..atomic import write_bytes
    from ..diskcache import envelope

    write_bytes(_cache_dir() / f"{key}.json", envelope(key, json.dumps(row, sort_keys=True).encode()))


# --------------------------------------------------------------------------- journal
class Journal:
    """Append-only JSON-lines record of finished runs; survives a kill at any instant (a torn last
    line is ignored on reading)."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, dict]:
        done: dict[str, dict] = {}
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # torn write of a killed sweep
            if isinstance(rec, dict) and "key" in rec and "row" in rec:
                done[rec["key"]] = rec["row"]
        return done

    def append(self, key: str, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": key, "row": row}, sort_keys=True) + "\n"
        with open(self.path, "a+b") as fh:
            if fh.tell() > 0:  # a killed writer may have left a torn line: start a fresh one
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())


# --------------------------------------------------------------------------- sweep
@dataclass
class SweepStats:
    total: int = 0
    from_journal: int = 0
    from_cache: int = 0
    simulated: int = 0


def run_grid(
    grid: Grid,
    jobs: int = 1,
    journal: Path | None = None,
    executor: Executor | None = None,
    progress: bool = False,
    use_cache: bool = True,
    limit: int | None = None,
    on_row: Callable[[int, dict], None] | None = None,
) -> tuple[pd.DataFrame, SweepStats]:
    """Run every point of ``grid``; returns the tidy table (one row per point, in point order).

    ``limit`` stops after that many new simulations (what a killed sweep leaves behind; tests use
    it). ``executor`` replaces the local process pool (e.g. a Dask client's executor).
    """
    points = grid.expand()
    cfgs = grid.configs()
    keys = [run_key(c) for c in cfgs]
    stats = SweepStats(total=len(points))
    jr = Journal(journal) if journal else None
    done = jr.read() if jr else {}
    rows: dict[int, dict] = {}
    todo: list[int] = []
    for i, k in enumerate(keys):
        if k in done:
            rows[i] = done[k]
            stats.from_journal += 1
            continue
        cached = _cache_get(k) if use_cache else None
        if cached is not None:
            rows[i] = cached
            stats.from_cache += 1
            if jr:
                jr.append(k, cached)
            continue
        todo.append(i)
    if limit is not None:
        todo = todo[:limit]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(points), initial=len(rows), desc=grid.name, unit="run", dynamic_ncols=True)

    def finish(i: int, row: dict) -> None:
        rows[i] = row
        stats.simulated += 1
        if use_cache:
            _cache_put(keys[i], row)
        if jr:
            jr.append(keys[i], row)
        if on_row:
            on_row(i, row)
        if bar:
            bar.update(1)

    if todo and executor is None and (jobs <= 1 or os.environ.get("PI2SIM_NO_DISK_MEMO") != "1"):
        # the points that differ only in their cache regions (a memory sweep) simulate their
        # caches in one pass; the points then find their results in the memo (in this process,
        # or on disk for the workers of a parallel sweep)
        from ..simulation import prefetch_access

        prefetch_access([cfgs[i] for i in todo])
    if todo:
        if executor is None and jobs <= 1:
            for i in todo:
                finish(i, run_point(cfgs[i]))
        else:
            own = executor is None
            ex = executor or ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
            try:
                futs = {ex.submit(run_point, cfgs[i]): i for i in todo}
                for f in as_completed(futs):
                    finish(futs[f], f.result())
            except BaseException:
                if own:  # interrupted (Ctrl-C, SIGTERM): stop the workers now, not after their current point
                    procs = list((getattr(ex, "_processes", None) or {}).values())
                    ex.shutdown(wait=False, cancel_futures=True)
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.join(5)
                raise
            else:
                if own:
                    ex.shutdown(cancel_futures=True)
    if bar:
        bar.close()
    table = tidy(points, cfgs, keys, rows)
    return table, stats


def tidy(points: list[dict], cfgs: list[RunConfig], keys: list[str], rows: dict[int, dict]) -> pd.DataFrame:
    factor_cols: list[str] = []
    for p in points:
        for k in p:
            if k not in factor_cols:
                factor_cols.append(k)
    recs = []
    for i, (p, c, k) in enumerate(zip(points, cfgs, keys)):
        if i not in rows:
            continue
        rec: dict[str, Any] = {"point": i}
        for col in factor_cols:
            rec[col] = p.get(col)
        rec.update({"device": c.device, "model": c.model, "policy": c.policy} | {col: p[col] for col in factor_cols if col in p})
        rec.update(rows[i])
        rec["config_hash"], rec["code_version"] = k.split("-")
        recs.append(rec)
    df = pd.DataFrame(recs)
    if len(df):
        first = ["point", *[c for c in factor_cols if c in df.columns], *[c for c in ("device", "model", "policy") if c not in factor_cols]]
        extra = sorted(c for c in df.columns if c.startswith(("critical_", "stage_", "memory_", "util_")) and c not in METRICS and c not in first)
        rest = [c for c in METRICS if c in df.columns] + extra
        df = df[first + rest + ["config_hash", "code_version"]]
    return df


def require_parquet(out: Path) -> None:
    """Parquet needs pyarrow (extra ``sweep``); say so as bad input."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise InputError(None, "--out", "a .csv path, or pyarrow installed for Parquet (pip install 'pi2sim[sweep]')", str(out)) from None


def write_table(df: pd.DataFrame, out: Path) -> list[Path]:
    """Parquet (if ``out`` ends in .parquet) and CSV beside it, each written atomically."""
    from ..atomic import atomic_open, write_text

    out = Path(out)
    written = []
    csv_path = out.with_suffix(".csv")
    if out.suffix == ".parquet":
        require_parquet(out)
        with atomic_open(out) as fh:
            df.to_parquet(fh, index=False)
        written.append(out)
    write_text(csv_path, df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    written.append(csv_path)
    return written


def sweep(base: dict[str, Any], factors: dict[str, Iterable[Any]] | None = None, points: list[dict] | None = None, jobs: int = 1, **kw) -> pd.DataFrame:
    """Notebook entry point: ``pi2sim.sweep({"model": "bamboo-7b"}, {"memory_gb": [4, 6, 8]})``."""
    data: dict[str, Any] = {"base": base}
    if factors is not None:
        data["factors"] = {k: (v if isinstance(v, dict) else list(v)) for k, v in factors.items()}
    if points is not None:
        data["points"] = points
    grid = parse_grid(data, "<pi2sim.sweep>")
    table, _ = run_grid(grid, jobs=jobs, **kw)
    return table


# --------------------------------------------------------------------------- inverse questions
_CONDITION = __import__("re").compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|>|<)\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def parse_condition(text: str) -> tuple[str, str, float]:
    """``"decode_tok_s >= 8"`` -> ("decode_tok_s", ">=", 8.0); the metric must be a column of a sweep's table."""
    m = _CONDITION.match(text or "")
    if not m or m.group(1) not in METRICS or m.group(1) in ("status", "reason"):
        raise InputError(None, "--find", "a condition 'METRIC OP VALUE' on a numeric column of the table (e.g. 'decode_tok_s >= 8', "
                         "'energy_j_per_token < 0.5'; OP one of >=, <=, >, <)", text)
    return m.group(1), m.group(2), float(m.group(3))


def find_boundary(grid: Grid, condition: str, key: str, minimize: bool = True, tolerance: float | None = None,
                  progress: bool = False, use_cache: bool = True) -> pd.DataFrame:
    """The least (``minimize``) or greatest value of the numeric factor ``key`` at which
    ``condition`` holds, for every combination of the grid's other factors, by bisection between
    the factor's smallest and largest value (the condition assumed monotone in ``key``: more
    memory, more speed), to within ``tolerance`` (default: the factor's smallest step). A few runs
    per combination instead of the whole grid; each run is an ordinary sweep point (validated,
    cached)."""
    metric, op, value = parse_condition(condition)
    if grid.points is not None or key not in grid.factors:
        raise InputError(grid.source, f"factors.{key}", f"a numeric factor of the grid to search over (--minimize/--maximize {key})")
    vals = sorted(float(v) for v in grid.factors[key] if isinstance(v, (int, float)) and not isinstance(v, bool))
    if len(vals) != len(grid.factors[key]) or len(vals) < 2:
        raise InputError(grid.source, f"factors.{key}", "at least two numbers (the range to search: its smallest and largest value)", grid.factors[key])
    step = min(b - a for a, b in zip(vals, vals[1:]) if b > a)
    tol = tolerance if tolerance is not None else step
    if not tol > 0:
        raise InputError(None, "--tolerance", "a positive step", tolerance)
    others = {k: v for k, v in grid.factors.items() if k != key}
    combos = [dict(zip(others, c)) for c in itertools.product(*others.values())] if others else [{}]
    grid.validate()
    base = base_config(grid.base, grid.source)

    def holds(point: dict, x: float) -> tuple[bool, dict]:
        cfg = apply_values(base, {**point, key: x}, source=f"{grid.source}: {point} {key}={x:g}")
        k = run_key(cfg)
        row = _cache_get(k) if use_cache else None
        if row is None:
            row = run_point(cfg)
            if use_cache:
                _cache_put(k, row)
        v = row.get(metric)
        ok = row.get("status") == "ok" and v is not None and _OPS[op](float(v), value)
        return ok, row

    rows = []
    for point in combos:
        lo, hi = vals[0], vals[-1]
        good_end, bad_end = (hi, lo) if minimize else (lo, hi)
        runs = 1
        ok, row = holds(point, good_end)
        if not ok:
            rows.append({**point, key: None, metric: row.get(metric), "status": f"not met in {vals[0]:g}..{vals[-1]:g}", "runs": runs})
            continue
        best, best_row = good_end, row
        ok, row = holds(point, bad_end)
        runs += 1
        if ok:
            rows.append({**point, key: bad_end, metric: row.get(metric), "status": "met at the end of the range", "runs": runs})
            continue
        good, bad = good_end, bad_end
        while abs(good - bad) > tol:
            mid = (good + bad) / 2
            ok, row = holds(point, mid)
            runs += 1
            if progress:
                import sys

                print(f"[find] {point} {key}={mid:g}: {metric}={row.get(metric)} ({'met' if ok else 'not met'})", file=sys.stderr, flush=True)
            if ok:
                good, best, best_row = mid, mid, row
            else:
                bad = mid
        rows.append({**point, key: best, metric: best_row.get(metric), "status": f"found (within {tol:g})", "runs": runs})
    return pd.DataFrame(rows)
