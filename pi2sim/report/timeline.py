"""Perfetto / Chrome trace export of an event-tier run (``pi2sim run --timeline out.json``).

The file is the Chrome JSON trace format (``{"traceEvents": [...]}``), which ui.perfetto.dev and
chrome://tracing open directly:

* process "phone": one thread (track) per CPU core, in the device's core order, plus the I/O
  thread's own track when it shares a core with compute threads; "npu" and "gpu" tracks;
* process "UFS": one track per queue slot (a request occupies a slot from issue to completion);
* process "decode": a slice per token and per layer, to navigate;
* counters: DRAM bandwidth per agent, DRAM resident, neuron-cache hit rate, UFS requests in flight;
* flow arrows from the last read of a batch to the compute task that used its weights.

Timestamps are microseconds of simulated time, rounded to the nanosecond and written without a
wall-clock stamp, so the same run gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from ..engine import recorder as R
from ..engine.recorder import Recorder

PID_PHONE, PID_UFS, PID_DECODE, PID_COUNTERS = 1, 2, 3, 4


def _us(t_s: float) -> float:
    return round(t_s * 1e6, 3)


def _track_ids(rec: Recorder) -> dict[str, tuple[int, int, str]]:
    """track -> (pid, tid, display name), tids in a stable order."""
    tracks = sorted({s.track for s in rec.slices} | {f.src_track for f in rec.complete_flows()})
    core_rank = {R.cpu_track(c): i for i, c in enumerate(rec.core_order)}
    out: dict[str, tuple[int, int, str]] = {}
    for tr in tracks:
        if tr.startswith(R.CPU_PREFIX):
            base = tr.split(":")[1]
            rank = core_rank.get(R.cpu_track(base), len(core_rank))
            io = tr.endswith(":io")
            out[tr] = (PID_PHONE, 1 + 2 * rank + (1 if io else 0), f"CPU {base}" + (" (I/O thread)" if io else ""))
        elif tr in ("npu", "gpu"):
            out[tr] = (PID_PHONE, 1000 + (tr == "gpu"), tr.upper())
        elif tr.startswith(R.UFS_SLOT_PREFIX):
            n = int(tr[len(R.UFS_SLOT_PREFIX):])
            out[tr] = (PID_UFS, 1 + n, f"queue slot {n}")
        elif tr == R.UFS_BATCH:
            out[tr] = (PID_UFS, 0, "blocking reads")
        elif tr == R.DECODE:
            out[tr] = (PID_DECODE, 1, "tokens")
        elif tr == R.LAYERS:
            out[tr] = (PID_DECODE, 2, "layers")
        else:
            out[tr] = (PID_DECODE, 100 + len(out), tr)
    return out


def _in_flight(rec: Recorder) -> list[tuple[float, float]]:
    """UFS requests in flight over time, from the request slices."""
    edges: list[tuple[float, int]] = []
    for s in rec.slices:
        if s.track.startswith(R.UFS_SLOT_PREFIX):
            edges += [(_us(s.start_s), 1), (_us(s.end_s), -1)]
    edges.sort()
    out: list[tuple[float, float]] = []
    level = 0
    for ts, d in edges:
        level += d
        if out and out[-1][0] == ts:
            out[-1] = (ts, level)
        else:
            out.append((ts, level))
    return out


def _by_time(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Counter points in time order (a tier may record them out of order); of several at one
    instant the last recorded holds; repeated values dropped."""
    out: list[tuple[float, float]] = []
    for ts, v in sorted(points, key=lambda p: p[0]):  # stable: recording order within an instant
        if out and out[-1][0] == ts:
            out[-1] = (ts, v)
        elif not out or out[-1][1] != v:
            out.append((ts, v))
    return out


def chrome_trace(rec: Recorder) -> dict:
    ids = _track_ids(rec)
    ev: list[dict] = []
    names = {PID_PHONE: "phone", PID_UFS: "UFS", PID_DECODE: "decode", PID_COUNTERS: "counters"}
    for pid, name in names.items():
        ev.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})
        ev.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    for tr, (pid, tid, name) in sorted(ids.items(), key=lambda kv: kv[1][:2]):
        ev.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}})
        ev.append({"ph": "M", "name": "thread_sort_index", "pid": pid, "tid": tid, "args": {"sort_index": tid}})
    for s in rec.slices:
        pid, tid, _ = ids[s.track]
        ts, end = _us(s.start_s), _us(s.end_s)
        if end <= ts:
            continue
        ev.append({"ph": "X", "name": s.name, "cat": s.track.split(":")[0], "pid": pid, "tid": tid, "ts": ts,
                   "dur": round(end - ts, 3), "args": s.args})
    series = {name: _by_time([(_us(t), v) for t, v in pts]) for name, pts in rec.counters.items()}
    series["UFS requests in flight"] = _in_flight(rec)
    for name in sorted(series):
        for ts, v in series[name]:
            ev.append({"ph": "C", "name": name, "pid": PID_COUNTERS, "tid": 0, "ts": ts, "args": {"value": v}})
    for f in rec.complete_flows():
        spid, stid, _ = ids[f.src_track]
        dpid, dtid, _ = ids[f.dst_track]
        ev.append({"ph": "s", "id": f.id, "name": "weights loaded", "cat": "io", "pid": spid, "tid": stid, "ts": _us(f.src_s)})
        ev.append({"ph": "f", "bp": "e", "id": f.id, "name": "weights loaded", "cat": "io", "pid": dpid, "tid": dtid, "ts": _us(f.dst_s)})
    return {"traceEvents": ev, "displayTimeUnit": "ms", "otherData": {k: str(v) for k, v in sorted(rec.meta.items())}}


def write_timeline(path: str | Path, rec: Recorder) -> Path:
    path = Path(path)
    write_text(path, json.dumps(chrome_trace(rec), separators=(",", ":"), sort_keys=True, allow_nan=False) + "\n")
    return path
