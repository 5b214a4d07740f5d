"""Dedicated fuzz run: every entry point of tests/fuzz_targets.py with N generated inputs.

    python tests/fuzz_run.py --examples 10000            # ~10k inputs per entry point
    python tests/fuzz_run.py --examples 500 --only cli   # one entry point

Prints, per entry point, the inputs tried, how many were accepted and rejected, and the findings
(crashes, malformed rejections, accepted nonsense; must be 0), and writes the table to
``benchmarks/results/fuzz-<host>-<date>.json``. Hypothesis runs each entry point with a fixed
seed (``--seed``), so a run is reproducible; a finding is shrunk to a minimal input and printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fuzz_targets as F  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402


def run_target(name: str, examples: int, rng_seed: int) -> dict:
    fn, strategy = F.TARGETS[name]
    findings: list[str] = []

    @seed(rng_seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy())
    def prop(x):
        fn(x)

    t0 = time.perf_counter()
    try:
        prop()
    except Exception as exc:  # a finding: hypothesis has shrunk it
        findings.append("".join(traceback.format_exception_only(type(exc), exc)).strip())
    c = F.COUNTS.get(name, {})
    return {"entry_point": name, "inputs": int(sum(c.values())), "accepted": int(c.get("accepted", 0)),
            "rejected": int(c.get("rejected", 0)), "findings": len(findings), "finding_text": findings,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10000)
    ap.add_argument("--only", action="append", choices=sorted(F.TARGETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    print(f"{'entry point':14s} {'inputs':>8s} {'accepted':>9s} {'rejected':>9s} {'findings':>9s} {'wall s':>8s}")
    for name in args.only or list(F.TARGETS):
        r = run_target(name, args.examples, args.seed)
        rows.append(r)
        print(f"{name:14s} {r['inputs']:8d} {r['accepted']:9d} {r['rejected']:9d} {r['findings']:9d} {r['wall_s']:8.1f}", flush=True)
        for f in r["finding_text"]:
            print(f"  finding: {f}")
    out = Path(args.out) if args.out else HERE.parent / "benchmarks" / "results" / f"fuzz-{platform.node() or 'host'}-{date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"examples_per_entry_point": args.examples, "seed": args.seed, "python": platform.python_version(), "rows": rows}, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 1 if any(r["findings"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
