"""pi2sim's speed and memory benchmarks (not part of the test pass/fail).

    python benchmarks/run.py            # full suite, ~10 min on 2 cores
    python benchmarks/run.py --quick    # fewer tokens / configs, ~2 min
    python benchmarks/run.py --profile  # + a pyinstrument profile of a cold Mixtral run (extra `bench`)

Prints one table (measurement, value, target) and writes it with a description of the machine to
``benchmarks/results/<host>-<date>.json``. Every measurement runs in a fresh subprocess, so peak
RSS is that run's own and no warm cache from an earlier measurement helps a later one (synthetic
traces are generated once, beforehand, and their generation is timed separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent

TARGETS = {
    # (model, tier): simulated decode tokens per wall-second (issue 7)
    ("turbosparse-mixtral-47b", "cluster"): 300.0,
    ("turbosparse-mixtral-47b", "analytic"): 20000.0,
}


def _child(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object. Adds the child's own peak RSS."""
    code += "\nimport resource as _r; print(json.dumps({'peak_rss_mb': _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    # no on-disk access memo: a cold run measures the cache simulation, whatever ran before
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PI2SIM_NO_DISK_MEMO": "1", **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    lines = r.stdout.strip().splitlines()
    out = json.loads(lines[-2])
    out.update(json.loads(lines[-1]))  # Linux ru_maxrss is in KiB
    return out


def decode_speed(model: str, tier: str, tokens: int, memory: dict, timing_only: bool = False) -> dict:
    """Simulated decode tokens per wall-second of one run. ``timing_only``: the measured run differs
    from an earlier one only after the access model (compute threads), so the access result is
    memoised and the run costs specs + timing + report (what a sweep over device knobs pays)."""
    code = f"""
import json, time
from pi2sim.config import RunConfig, apply_values
from pi2sim.simulation import build, run
cfg = apply_values(RunConfig(), {{"model": {model!r}, "decode_tokens": {tokens}, "fidelity": {tier!r}, **{memory!r}}})
run(apply_values(cfg, {{"decode_tokens": {tokens} if {timing_only!r} else 4}}))  # imports, trace open (and the access, if timing_only)
if {timing_only!r}:
    cfg = apply_values(cfg, {{"compute_threads": 3}})
t0 = time.perf_counter(); r = run(cfg); wall = time.perf_counter() - t0
print(json.dumps({{"wall_s": wall, "decode_tok_s_sim": r.summary["decode_tok_s"]}}))
"""
    out = _child(code)
    out["sim_tokens_per_wall_s"] = tokens / out["wall_s"]
    return out


def synth_speed(model: str, tokens: int, cache: Path) -> dict:
    code = f"""
import json, time
from pi2sim.trace.locate import model_trace_path
from pi2sim.specs.model import load_model
t0 = time.perf_counter(); model_trace_path(load_model({model!r}), {tokens}, 7, progress=False); wall = time.perf_counter() - t0
print(json.dumps({{"wall_s": wall}}))
"""
    return _child(code, {"PI2SIM_CACHE": str(cache)})


def prepare_traces(models: list[str], token_counts: list[int]) -> None:
    """Generate (or find in the cache) the synthetic trace of every model and token count."""
    code = f"""
import json
from pi2sim.trace.locate import model_trace_path
from pi2sim.specs.model import load_model
for m in {models!r}:
    for n in {token_counts!r}:
        model_trace_path(load_model(m), n, 0, progress=False)
print(json.dumps({{}}))
"""
    _child(code)


def sweep_throughput(factors: dict, tokens: int, jobs: int) -> dict:
    memory = {} if "memory_gb" in factors else {"ffn_offload": 0.5}
    code = f"""
import json, time
import pi2sim
t0 = time.perf_counter()
df = pi2sim.sweep({{"model": "turbosparse-mistral-7b", "decode_tokens": {tokens}, "fidelity": "analytic", **{memory!r}}}, {factors!r}, jobs={jobs}, use_cache=False)
wall = time.perf_counter() - t0
print(json.dumps({{"wall_s": wall, "ok": int((df.status == "ok").sum()), "configs": len(df)}}))
"""
    out = _child(code)
    out["configs_per_min"] = out["configs"] / out["wall_s"] * 60
    return out


PYTHON = sys.executable  # the interpreter of whole-process runs (main() may pick a core-only venv)


def core_venv(where: Path) -> str:
    """A fresh venv with pi2sim installed as the README's first command installs it (``pip install
    -e .``, no extras): what a newcomer's whole-process times are. (With every extra, scipy is
    present and numba imports it at start-up: ~0.1 s more per process.)"""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = str(where / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "-e", str(HERE.parent)], check=True)
    return py


def whole_process(argv: list[str], cache: Path, repeat: int = 1, before=None) -> dict:
    """Wall time of one ``pi2sim`` command as a user runs it (a fresh interpreter: imports,
    start-up, trace generation if the cache lacks it, every tier), with ``PI2SIM_CACHE=cache``
    (a warm cache holds the trace and the access results of the same command run before).

    The median of ``repeat`` runs (these shared 2-core VMs vary by +-10% from run to run), each
    after ``before()`` (e.g. emptying the cache, so that every run is a first one)."""
    env = {**os.environ, "PI2SIM_CACHE": str(cache)}
    walls = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        r = subprocess.run([PYTHON, "-m", "pi2sim", *argv], capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - t0)
        if r.returncode not in (0, 1):  # validate / regress exit 1 on a miss; that is still a finished run
            raise RuntimeError(r.stderr[-2000:])
    return {"wall_s": statistics.median(walls), "wall_runs_s": [round(w, 3) for w in walls], "stdout": r.stdout}


def _emptied(path: Path):
    """A ``before`` for :func:`whole_process`: ``path`` removed (the cache, or its memo)."""
    return lambda: shutil.rmtree(path, ignore_errors=True)


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (OSError, ValueError):
        pass
    import numpy
    import simpy

    info["numpy"], info["simpy"] = numpy.__version__, simpy.__version__
    return info


def profile(out_dir: Path) -> Path:
    """pyinstrument profile of a cold 1,024-token Mixtral-47B run on the cluster tier (the access
    model included), written as text next to the results."""
    code = """
import json, sys
from pyinstrument import Profiler
from pi2sim.config import RunConfig, apply_values
from pi2sim.simulation import run
cfg = apply_values(RunConfig(), {"model": "turbosparse-mixtral-47b", "decode_tokens": 1024, "fidelity": "cluster", "memory_gb": 19})
run(apply_values(cfg, {"decode_tokens": 4}))
p = Profiler(interval=0.001)
p.start(); run(cfg); p.stop()
sys.stderr.write(p.output_text(unicode=False, color=False, show_all=False))
print(json.dumps({}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    path = out_dir / f"profile-{platform.node() or 'host'}-{date.today().isoformat()}.txt"
    path.write_text(r.stderr)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer tokens and configs")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/<host>-<date>.json)")
    ap.add_argument("--profile", action="store_true", help="also write a pyinstrument profile of a cold Mixtral run (needs pyinstrument)")
    ap.add_argument("--whole-only", action="store_true", help="only the whole-process measurements (what a user waits for)")
    ap.add_argument("--this-python", action="store_true",
                    help="whole-process runs with this interpreter and its extras (default: a fresh core-only venv, as the README installs)")
    args = ap.parse_args()
    q = args.quick
    rows = []

    def add(name, value, unit, target=None, better="higher", extra=None):
        ok = None if target is None else (value >= target if better == "higher" else value <= target)
        rows.append({"measurement": name, "value": round(value, 3), "unit": unit, "target": target, "meets": ok, **(extra or {})})
        t = "" if target is None else f"{'>=' if better == 'higher' else '<='} {target:g}  {'ok' if ok else 'MISSED'}"
        print(f"{name:66s} {value:12.1f} {unit:18s} {t}", flush=True)

    # what a user waits for: whole processes, from an empty cache and from a warm one
    import tempfile

    run_tokens = "256" if q else "1024"
    mix = ["run", "--model", "turbosparse-mixtral-47b", "--memory-gb", "19", "--decode-tokens", run_tokens, "--quiet", "--json"]
    reps = 1 if q else 5
    global PYTHON
    venv_dir = tempfile.TemporaryDirectory()
    if not args.this_python:
        print("whole-process runs in a fresh core-only venv (pip install -e .) ...", flush=True)
        PYTHON = core_venv(Path(venv_dir.name) / "venv")
    interp = "core install" if not args.this_python else "this interpreter"
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for when in ("empty cache", "warm cache"):
            r = whole_process(mix, cache, reps, _emptied(cache) if when == "empty cache" else None)
            summary = json.loads(r["stdout"])
            sim_s = summary["decode_tokens"] / summary["decode_tok_s"] + summary["ttft_ms"] / 1e3
            add(f"pi2sim run, Mixtral-47B 19 GB {run_tokens} tokens, default tier, {when} ({interp})", r["wall_s"], "s wall",
                None if q else (5.0 if when == "empty cache" else 2.0), "lower",
                extra={"phone_seconds_per_wall_second": sim_s / r["wall_s"], "wall_runs_s": r["wall_runs_s"]})
            print(f"{'':66s} {sim_s / r['wall_s']:12.1f} x the phone's real time (runs: {r['wall_runs_s']})", flush=True)
        # the trace is cached (a prefix of the 1,024-token one); the access results are not
        no_memo = _emptied(cache / "memo")
        single = whole_process(["run", "--model", "turbosparse-mixtral-47b", "--memory-gb", "12.25", "--decode-tokens", "128", "--fidelity", "analytic", "--quiet", "--json"], cache, reps, no_memo)
        grid = Path(tmp) / "grid.yaml"
        grid.write_text("base: {model: turbosparse-mixtral-47b, decode_tokens: 128, fidelity: analytic}\n"
                        "factors:\n  memory_gb: {from: 7, to: 18.5, step: 0.5}\n")
        out = Path(tmp) / "sweep.csv"

        def fresh_sweep():
            no_memo()
            for p in (out, Path(f"{out}.journal.jsonl")):
                p.unlink(missing_ok=True)

        sweep = whole_process(["sweep", str(grid), "--jobs", "1", "--no-cache", "--out", str(out), "--quiet"], cache, reps, fresh_sweep)
        add("24-point memory sweep (Mixtral, 128 tokens, 1 job, no run cache) / one 128-token run", sweep["wall_s"] / single["wall_s"],
            "x a single run", None if q else 4.0, "lower",
            extra={"sweep_wall_s": sweep["wall_s"], "single_wall_s": single["wall_s"], "sweep_runs_s": sweep["wall_runs_s"], "single_runs_s": single["wall_runs_s"]})
        print(f"{'':66s} sweep {sweep['wall_s']:.2f} s {sweep['wall_runs_s']}, one run {single['wall_s']:.2f} s {single['wall_runs_s']}", flush=True)
    if not q:
        with tempfile.TemporaryDirectory() as tmp:
            for when in ("empty cache", "warm cache"):
                r = whole_process(["validate", "--quiet"], Path(tmp))
                add(f"pi2sim validate (calibration set, full length), {when}", r["wall_s"], "s wall", 60.0, "lower")
    PYTHON = sys.executable
    venv_dir.cleanup()

    if args.whole_only:
        return _write(args, q, rows)

    # trace generation first (also fills the cache the decode runs use)
    gen_tokens = 256 if q else 1024
    with tempfile.TemporaryDirectory() as tmp:
        s = synth_speed("turbosparse-mixtral-47b", gen_tokens, Path(tmp))
    add(f"trace synth, Mixtral-47B, {gen_tokens} tokens", s["wall_s"], "s", 60.0 if gen_tokens == 1024 else None, "lower")

    # simulated decode tokens per wall-second of one run, access model included (cold)
    tiers = {"analytic": 256 if q else 1024, "layer": 64 if q else 256, "cluster": 256 if q else 1024}
    models = (("turbosparse-mistral-7b", {"ffn_offload": 0.5}), ("turbosparse-mixtral-47b", {"memory_gb": 19}))
    # every trace a measurement replays is generated now, outside the timed runs
    prepare_traces([m for m, _ in models], sorted(set(tiers.values()) | {4, 128}))
    for model, memory in models:
        for tier, tokens in tiers.items():
            r = decode_speed(model, tier, tokens, memory)
            add(f"{model} {tier}, cold ({tokens} tokens)", r["sim_tokens_per_wall_s"], "sim tok / wall s", TARGETS.get((model, tier)),
                extra={"wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"]})
    # the same runs when only the timing changed (a sweep over device or schedule knobs): the
    # access result is memoised, so this is the timing engine's own speed
    for tier, tokens in tiers.items():
        r = decode_speed("turbosparse-mixtral-47b", tier, tokens, {"memory_gb": 19}, timing_only=True)
        add(f"turbosparse-mixtral-47b {tier}, timing only ({tokens} tokens)", r["sim_tokens_per_wall_s"], "sim tok / wall s",
            TARGETS.get(("turbosparse-mixtral-47b", tier)), extra={"wall_s": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"]})

    for tier in ("cluster", "layer"):
        rss = decode_speed("turbosparse-mixtral-47b", tier, 256 if q else 1024, {"memory_gb": 19})
        add(f"peak RSS, Mixtral-47B {'256' if q else '1,024'}-token run ({tier} tier)", rss["peak_rss_mb"] / 1024, "GB", 1.5, "lower")

    # a memory sweep: every config has its own cache size, so every config runs the access model
    n_cfg, tokens = (100, 128) if q else (1000, 128)
    sw = sweep_throughput({"memory_gb": [round(3 + 0.002 * i, 3) for i in range(n_cfg)]}, tokens, jobs=2)
    add(f"analytic sweep over memory (Mistral-7B), {n_cfg} configs x {tokens} tokens, 2 jobs", sw["configs_per_min"], "configs / min", 200.0,
        extra={"wall_s": sw["wall_s"]})
    # a device/schedule sweep at one memory size: the access result is shared (memoised per worker)
    lat = [f"{40 + 5 * i} us" for i in range(5 if q else 25)]
    knobs = {"device.storage.latency": lat, "compute_threads": [2, 3, 4, 5], "cluster_neurons": [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096][: 2 if q else 10]}
    sw = sweep_throughput(knobs, tokens, jobs=2)
    add(f"analytic sweep over device/schedule knobs, {sw['configs']} configs x {tokens} tokens, 2 jobs", sw["configs_per_min"], "configs / min", 200.0,
        extra={"wall_s": sw["wall_s"]})

    return _write(args, q, rows)


def _write(args, q: bool, rows: list[dict]) -> int:
    part = "-quick" if q else ("-whole" if args.whole_only else "")
    out = Path(args.out) if args.out else HERE / "results" / f"{platform.node() or 'host'}-{date.today().isoformat()}{part}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": machine(), "quick": q, "rows": rows}, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    if args.profile:
        print(f"wrote {profile(out.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
