"""Fuzz entry points: pi2sim's input readers fed generated, mostly broken, inputs.

Shared by the CI sample (``tests/test_fuzz.py``, hypothesis, a few hundred inputs per entry
point), the dedicated run (``python tests/fuzz_run.py --examples 10000``) and the coverage-guided
run (``python tests/fuzz_atheris.py``).

Each target takes one generated input and returns ``"accepted"`` or ``"rejected"``; anything
else is a finding and raises:

* a rejection must be an :class:`~pi2sim.errors.InputError` whose text is one line naming the file
  (or the flag); through the CLI, exit status 2, one line on stderr, no traceback;
* an accepted input must not carry nonsense: every number of the loaded spec is finite, and a
  value the generator made nonsensical on purpose (negative, NaN, infinite, zero where a rate
  is needed, a unit slipped by 1000x) must have been rejected.

Entry points: ``device_yaml``, ``model_yaml``, ``grid_yaml`` (sweep grids), ``trace_file`` (the
``.pi2t`` reader), ``cli`` (``pi2sim run`` argument handling through config, specs and the
policy's memory plan; the simulation itself is exercised by the rest of the suite), ``path_flag``
(every command's path flags, generated paths into a scratch tree) and ``cache_env``
(``PI2SIM_CACHE``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hypothesis import strategies as st

from pi2sim import resources
from pi2sim.errors import InputError

COUNTS: dict[str, Counter] = {}

NUMBER_UNIT = re.compile(r"^\s*([-+]?[0-9][0-9.]*(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z/%]+(?:/s)?)\s*$")


class Finding(AssertionError):
    """A crash, a malformed rejection or a silently accepted nonsense value."""


def _tally(target: str, outcome: str) -> str:
    COUNTS.setdefault(target, Counter())[outcome] += 1
    return outcome


def _check_rejection(exc: InputError, source: str) -> None:
    line = exc.line()
    if "\n" in line or not line.strip():
        raise Finding(f"rejection is not one line: {line!r}")
    if source and not line.startswith(source):
        raise Finding(f"rejection does not start with the file name {source!r}: {line!r}")


def _finite(obj: Any, path: str = "") -> None:
    """Every number of a loaded spec is finite (no NaN / inf slipped through)."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _finite(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _finite(v, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _finite(v, f"{path}.{k}")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise Finding(f"accepted a non-finite number at {path}: {obj}")


# ---------------------------------------------------------------- YAML documents and mutations
def _leaves(d: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(d, dict):
        return [p for k, v in d.items() for p in _leaves(v, path + (k,))]
    if isinstance(d, list):
        return [p for i, v in enumerate(d) for p in _leaves(v, path + (i,))]
    return [path]


def _get(d: Any, path: tuple) -> Any:
    for k in path:
        d = d[k]
    return d


def _set(d: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _delete(d: Any, path: tuple) -> None:
    for k in path[:-1]:
        d = d[k]
    if isinstance(d, dict):
        del d[path[-1]]
    else:
        d.pop(path[-1])


def bundled_docs(kind: str) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(resources.data_dir(kind).glob("*.yaml"))}


NASTY_SCALARS = [
    None, True, False, 0, -1, 0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 2**63, "", " ", "nan",
    "inf", "-inf", "NaN GB/s", "inf us", "1e999 GB", "-4 GB/s", "0 GB/s", "4", "4 parsecs", "4 GB/s/s", "4GB", "GB/s 4",
    "4 gb/s", "4 Gb/s", "4e3 MB/s", "0x10", "1_000", "\x00", "\u212b", [], {}, [1, 2], {"a": 1},
]


# nine levels of ten aliases: 10**9 nodes if anything walked it expanded
ALIAS_BOMB = "\nb0: &b0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


@st.composite
def mutated_yaml(draw, docs: dict[str, dict]) -> tuple[str, str, tuple | None, str | None]:
    """(file name, YAML text, mutated key path or None, nonsense kind or None). The nonsense kind
    says what the generator made invalid on purpose, which the loader must reject."""
    name = draw(st.sampled_from(sorted(docs)))
    doc = yaml.safe_load(yaml.safe_dump(docs[name]))  # deep copy
    leaves = _leaves(doc)
    n_mut = draw(st.integers(1, 3))
    path, nonsense, nonsense_path = None, None, None
    touched: list[tuple] = []  # paths mutated so far

    def overlaps(a: tuple, b: tuple) -> bool:
        return a[: len(b)] == b or b[: len(a)] == a

    for _ in range(n_mut):
        leaves = _leaves(doc)
        if not leaves:
            break
        path = draw(st.sampled_from(leaves))
        if not path:
            break
        if nonsense_path is not None and overlaps(nonsense_path, path):
            nonsense, nonsense_path = None, None  # this mutation overwrites the nonsense one
        # only a value nobody edited yet can be made nonsense on purpose: a second edit of the
        # same value may undo the first (x1000 then x0.001)
        fresh = not any(overlaps(p, path) for p in touched)
        touched.append(path)
        old = _get(doc, path)
        op = draw(st.sampled_from(["benign", "scale_unit", "negate", "nan", "zero_rate", "nasty", "number", "text", "delete", "unknown_key"]))
        m = NUMBER_UNIT.match(old) if isinstance(old, str) else None
        claim = None
        if op == "benign" and m:  # a plausible edit (what a user's what-if does): must not crash either way
            _set(doc, path, f"{float(m.group(1)) * draw(st.sampled_from([0.5, 0.9, 1.0, 1.1, 2.0])):g} {m.group(2)}")
        elif op == "scale_unit" and m and float(m.group(1)) != 0 and m.group(2) != "%":
            fac = draw(st.sampled_from([1000.0, 0.001]))
            _set(doc, path, f"{float(m.group(1)) * fac:g} {m.group(2)}")
            claim = f"1000x unit slip ({old!r} -> {_get(doc, path)!r})"
        elif op == "negate" and m and float(m.group(1)) > 0:
            _set(doc, path, f"-{m.group(1)} {m.group(2)}")
            claim = "negative quantity"
        elif op == "negate" and isinstance(old, (int, float)) and not isinstance(old, bool) and old > 0:
            _set(doc, path, -old)
            claim = "negative number"
        elif op == "nan" and (m or (isinstance(old, (int, float)) and not isinstance(old, bool))):
            _set(doc, path, f"nan {m.group(2)}" if m else float("nan"))
            claim = "NaN"
        elif op == "zero_rate" and m and m.group(2).endswith("/s"):
            _set(doc, path, f"0 {m.group(2)}")
            claim = "zero bandwidth"
        elif op == "nasty":
            _set(doc, path, copy.deepcopy(draw(st.sampled_from(NASTY_SCALARS))))  # never share the list's objects
        elif op == "number":
            _set(doc, path, draw(st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True))))
        elif op == "text":
            _set(doc, path, draw(st.text(max_size=20)))
        elif op == "delete":
            _delete(doc, path)
            touched.append(path[:-1])  # list items after it moved: none of them is fresh any more
            if nonsense_path is not None and len(path) <= len(nonsense_path) and path[:-1] == nonsense_path[: len(path) - 1]:
                nonsense, nonsense_path = None, None  # list indices may have shifted
        else:
            parent = _get(doc, path[:-1]) if len(path) > 1 else doc
            if isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=12))] = copy.deepcopy(draw(st.sampled_from(NASTY_SCALARS)))
        if claim is not None and fresh and nonsense is None:
            nonsense, nonsense_path = claim, path
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    if draw(st.integers(0, 9)) == 0:  # sometimes break the text itself
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", ":", "\t", "- [", "{", "'", "&a *a", "? x", "\x00", "%YAML 9\n", "\nz: &r [*r]\n", ALIAS_BOMB])) + text[cut:]
        nonsense = None  # the text edit may have removed the mutated value
    return name, text, nonsense_path if nonsense else path, nonsense


def _load_text(target: str, loader, name: str, text: str, nonsense: str | None, path: tuple | None) -> str:
    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / name
        p.write_text(text, encoding="utf-8")
        try:
            spec = loader(p)
        except InputError as exc:
            _check_rejection(exc, str(p))
            return _tally(target, "rejected")
        _finite(spec)
        if nonsense is not None:
            raise Finding(f"{name}: accepted {nonsense} at {'.'.join(map(str, path or ()))}")
        return _tally(target, "accepted")


def device_yaml(case) -> str:
    from pi2sim.specs.device import load_device

    name, text, path, nonsense = case
    return _load_text("device_yaml", load_device, name, text, nonsense, path)


def model_yaml(case) -> str:
    from pi2sim.specs.model import load_model

    name, text, path, nonsense = case
    return _load_text("model_yaml", load_model, name, text, nonsense, path)


GRID_BASE = {
    "base": {"model": "smollm2-135m", "decode_tokens": 8, "fidelity": "analytic"},
    "factors": {"memory_gb": [0.3, 0.4], "device.storage.latency": ["60 us", "105 us"], "compute_threads": [2, 4]},
}


def grid_yaml(case) -> str:
    from pi2sim.workflows.sweeps import load_grid

    name, text, path, nonsense = case

    def load(p):
        g = load_grid(p)
        g.configs()  # every point applied to the base config
        return g

    return _load_text("grid_yaml", load, "grid.yaml", text, None, path)


# ---------------------------------------------------------------- traces
_TRACE_BYTES: bytes | None = None


def trace_seed() -> bytes:
    """A small valid trace (the bundled SmolLM2 trace's first 24 tokens), as bytes."""
    global _TRACE_BYTES
    if _TRACE_BYTES is None:
        from dataclasses import replace

        from pi2sim.trace import load
        from pi2sim.trace.format import save

        src = load(resources.data_dir("traces") / "smollm2-135m.pi2t")
        block = next(iter(src.iter_blocks()))
        n = min(24, len(block))
        meta = replace(src.meta, n_tokens=0, sequences=())
        with tempfile.TemporaryDirectory() as td:
            out = Path(td) / "seed.pi2t"
            save(out, meta, block.token_id[:n], block.seq[:n] * 0, block.phase[:n], block.codes[:n], chunk_tokens=8)
            _TRACE_BYTES = out.read_bytes()
        src.close()
    return _TRACE_BYTES


@st.composite
def mutated_trace(draw) -> bytes:
    data = bytearray(trace_seed())
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i : i + draw(st.integers(1, 64))]
    return bytes(data)


def trace_file(data: bytes) -> str:
    """Open the trace, read every block, compute its statistics: a corrupt file must be an
    InputError naming it, never a crash, a hang or wrong data accepted (the CRCs)."""
    from pi2sim.trace import load

    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "fuzz.pi2t"
        p.write_bytes(data)
        try:
            tr = load(p)
            try:
                n = 0
                for block in tr.iter_blocks():
                    codes = np.asarray(block.codes)
                    if codes.size and int(codes.max()) > len(tr.meta.levels):
                        raise Finding(f"accepted an activation code above the trace's {len(tr.meta.levels)} levels")
                    n += len(block)
                if n != tr.meta.n_tokens:
                    raise Finding(f"blocks hold {n} tokens, the header says {tr.meta.n_tokens}")
            finally:
                tr.close()
        except InputError as exc:
            _check_rejection(exc, str(p))
            return _tally("trace_file", "rejected")
        return _tally("trace_file", "accepted")


# ---------------------------------------------------------------- CLI
RUN_FLAGS = {
    "--device": st.sampled_from(["oneplus12", "oneplus_ace2", "galaxy_s24", "oneplus13", "oneplus12.yaml", "nope", "", "../devices", "/dev/null"]),
    "--model": st.sampled_from(["smollm2-135m", "turbosparse-mistral-7b", "turbosparse-mixtral-47b", "bamboo-7b", "llama-3.2-1b", "llama-3.1-8b",
                                "smallthinker-4b-a0.6b", "qwen2.5-7b", "x", ""]),
    "--policy": st.sampled_from(["powerinfer2", "llamacpp", "llm-in-a-flash", "dense", "powerinfer", "executorch", "genie", "powerserve", "mlc",
                                 "smallthinker", "Powerinfer2", ""]),
    "--best-of": st.sampled_from(["4", "1", "0", "-2", "x", "65"]),
    "--memory-gb": st.sampled_from(["4", "0", "-1", "nan", "inf", "1e9", "7 GB", "0.001", "19"]),
    "--ffn-offload": st.sampled_from(["0.5", "0", "1", "1.5", "-0.1", "nan", "50%"]),
    "--prompt-tokens": st.sampled_from(["64", "0", "-3", "1e3", "x", "100000000"]),
    "--decode-tokens": st.sampled_from(["8", "0", "-1", "1.5", "999999999", "nan"]),
    "--fidelity": st.sampled_from(["analytic", "layer", "cluster", "exact", ""]),
    "--seed": st.sampled_from(["0", "-1", "2**70", "x", "18446744073709551616"]),
    "--set": st.sampled_from([
        "quant=fp16", "quant=int3", "compute_threads=0", "compute_threads=99", "cluster_neurons=-5", "preset=v3",
        "preset=nope", "device.storage.latency=60 us", "device.storage.latency=60 ms", "device.storage.latency=-1 us",
        "device.dram.bw_cpu=0 GB/s", "device.dram.bw_cpu=nan GB/s", "device.cpu.clusters[0].count=0", "model.architecture.layers=0",
        "model.predictor.bytes_per_block=10 GB", "sparsity=0.7", "sparsity=2", "nokey", "=1", "x.y.z=1", "io_core=nope",
        "hot_fraction=1.5", "decode_tokens=abc", "device.npu.sync=575 ms",
        "quant=8da4w", "quant=w4a16", "quant=q4_0", "draft_model=llama-3.2-1b", "draft_model=nope", "draft_model=qwen3-0.6b",
        "acceptance=1.5", "acceptance=0", "draft_tokens=0", "context=64", "context=1024", "max_cached_matrices=-1",
        "max_cached_matrices=100", "best_of=3", "device.cpu.i8mm_gemm_speedup=0.5",
    ]),
    "--trace": st.sampled_from(["smollm2-135m", "missing.pi2t", "/dev/null", "", "devices"]),
}


@st.composite
def cli_args(draw) -> list[str]:
    flags = draw(st.lists(st.sampled_from(sorted(RUN_FLAGS)), min_size=0, max_size=5))
    args = ["run"]
    for f in flags:
        args += [f, draw(RUN_FLAGS[f])]
    if draw(st.integers(0, 7)) == 0:
        args.append(draw(st.sampled_from(["--bogus", "-x", "--decode-tokens", "positional", "--timeline-tokens=1:0"])))
    return args


def cli(args: list[str]) -> str:
    """``pi2sim run`` argument handling up to the simulation: parse, build the config, load and
    check the specs, construct the policy and its memory plan. Rejections: status 2, one line."""
    from pi2sim import cli as cli_mod
    from pi2sim.commands.run import config_from_args
    from pi2sim.simulation import build

    parser = cli_mod.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(args)
    except InputError as exc:  # pi2sim's parser turns argparse errors into one-line input errors
        _check_rejection(exc, "")
        return _tally("cli", "rejected")
    except SystemExit as exc:
        if exc.code != 2:
            raise Finding(f"argparse exit {exc.code} for {args}") from None
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if not lines or "Traceback" in err.getvalue():
            raise Finding(f"argparse rejection without a message for {args}") from None
        return _tally("cli", "rejected")
    try:
        cfg = config_from_args(ns)
        _, pol, _ = build(cfg)
        mem = pol.memory()
        mem.check()
    except InputError as exc:
        _check_rejection(exc, "")
        return _tally("cli", "rejected")
    if not (math.isfinite(cfg.memory_gb or 1.0) and cfg.decode_tokens > 0 and cfg.prompt_tokens > 0):
        raise Finding(f"accepted nonsense run options {args}")
    return _tally("cli", "accepted")


# ---------------------------------------------------------------- paths and environment
_SANDBOX: Path | None = None


def sandbox() -> Path:
    """A scratch tree the path targets point into: a file, a directory, a file inside it."""
    global _SANDBOX
    if _SANDBOX is None:
        _SANDBOX = Path(tempfile.mkdtemp(prefix="pi2sim-fuzz-paths-"))
        (_SANDBOX / "afile").write_text("x")
        (_SANDBOX / "adir").mkdir()
        (_SANDBOX / "adir" / "inner.yaml").write_text("a: 1\n")
    return _SANDBOX


PATH_PARTS = ["afile", "adir", "missing", "", ".", "..", "inner.yaml", "x" * 300, "a\x00b", "new", "sp ace", "\u00e9", "*", "~"]
# (command words before the flag, flag or None for a positional path)
PATH_FLAGS = [
    (["run"], "--out"), (["run"], "--timeline"), (["run"], "--plan"), (["run"], "--calibration"),
    (["validate"], "--scenarios"), (["validate"], "--out"), (["validate"], "--calibration"),
    (["sweep"], None), (["sweep", "g.yaml"], "--out"), (["regress"], "--suite"), (["calibrate"], "--scenarios"),
    (["calibrate"], "--out"), (["compare"], "--out"), (["plan"], "--out"), (["trace", "stats", "smollm2-135m"], "--out"),
    (["trace", "record"], "--out"), (["trace", "record", "--out", "t.pi2t"], "--prompts"),
]


@st.composite
def path_text(draw) -> str:
    """A path as a user might type it: inside the sandbox, absolute elsewhere, or arbitrary text."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.sampled_from(["", "/", "/dev/null", "/proc/self/status", "/nonexistent/x", "~", "-", "--out"]))
    if kind == 1:
        return draw(st.text(max_size=30))
    parts = draw(st.lists(st.sampled_from(PATH_PARTS), min_size=1, max_size=4))
    tail = "/" if draw(st.booleans()) and draw(st.booleans()) else ""
    return str(sandbox()) + "/" + "/".join(parts) + tail


@st.composite
def path_args(draw) -> list[str]:
    words, flag = draw(st.sampled_from(PATH_FLAGS))
    text = draw(path_text())
    return [*words, text] if flag is None else [*words, flag, text]


def path_flag(args: list[str]) -> str:
    """Parsing a command line whose one path argument was generated: the path checks run while
    parsing; a rejection is one line naming the flag (never an OSError or ValueError)."""
    from pi2sim import cli as cli_mod

    parser = cli_mod.build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(args)
    except InputError as exc:
        _check_rejection(exc, "")
        return _tally("path_flag", "rejected")
    except SystemExit as exc:
        if exc.code not in (0, 2):
            raise Finding(f"argparse exit {exc.code} for {args}") from None
        return _tally("path_flag", "rejected")
    for v in vars(ns).values():
        if isinstance(v, Path) and "\x00" in str(v):
            raise Finding(f"accepted a path with a NUL byte: {args}")
    return _tally("path_flag", "accepted")


def cache_env(text: str) -> str:
    """``PI2SIM_CACHE`` set to a generated path: the cache directory exists afterwards, or the
    rejection is one line naming the variable."""
    import os

    old = os.environ.get("PI2SIM_CACHE")
    os.environ["PI2SIM_CACHE"] = text
    try:
        got = resources.cache_dir()
    except InputError as exc:
        _check_rejection(exc, "")
        if text and "$PI2SIM_CACHE" not in exc.line():
            raise Finding(f"cache rejection does not name the variable: {exc.line()!r}") from None
        return _tally("cache_env", "rejected")
    finally:
        if old is None:
            os.environ.pop("PI2SIM_CACHE", None)
        else:
            os.environ["PI2SIM_CACHE"] = old
    if not got.is_dir():
        raise Finding(f"cache_dir() returned {got}, which is not a directory")
    return _tally("cache_env", "accepted")


@st.composite
def cache_text(draw) -> str:
    t = draw(path_text()).replace("\x00", "")  # an environment variable cannot hold a NUL byte
    return t if t.startswith(str(sandbox())) or t == "" or t.startswith(("/dev", "/proc", "/nonexistent")) else str(sandbox()) + "/" + t.lstrip("/")


# ---------------------------------------------------------------- pi2sim device new (issue 32) and overlays (issue 34)
DEVICE_NEW = {
    "--soc": st.sampled_from(["snapdragon-8-gen-2", "dimensity-8400", "tensor-g4", "snapdragon-9-gen-9", "", "SNAPDRAGON-8-GEN-2", "exynos-2500"]),
    "--ram": st.sampled_from(["8 GB", "12GB", "0 GB", "1 TB", "8", "-8 GB", "eight", "64 GB", "2 GB", "nan GB"]),
    "--storage": st.sampled_from(["ufs3.1", "ufs4.0", "ufs4.1", "emmc", "", "UFS4.0"]),
    "--clusters": st.sampled_from(["1x cortex-x3@3.36GHz,2x cortex-a715@2.8GHz", "2x cortex-z9@3GHz", "1x cortex-x4@30GHz", "0x cortex-a520@2GHz",
                                   "", ",,", "1x oryon-v3@4.6GHz", "1xcortex-x4@3.3GHz", "17x cortex-a520@2GHz", "1x cortex-a725@300MHz"]),
    "--battery": st.sampled_from(["3900 mAh", "15 Wh", "0 mAh", "lots", "999999 mAh", "4000"]),
}


@st.composite
def device_new_args(draw) -> list[str]:
    flags = draw(st.lists(st.sampled_from(sorted(DEVICE_NEW)), min_size=0, max_size=4, unique=True))
    args = ["device", "new", draw(st.sampled_from(["myphone", "Bad Name", "x", "a" * 70]))]
    for f in flags:
        args += [f, draw(DEVICE_NEW[f])]
    return args


def device_new(args: list[str]) -> str:
    """``pi2sim device new``: a file that loads as every device file does, or one line, status 2."""
    from pi2sim.cli import main
    from pi2sim.specs.device import load_device

    with tempfile.TemporaryDirectory() as td:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([*args, "--out", f"{td}/{args[2]}.yaml"])
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if code == 2:
            if len(lines) != 1 or "Traceback" in err.getvalue():
                raise Finding(f"device new {args}: rejection not one line: {err.getvalue()!r}")
            return _tally("device_new", "rejected")
        if code != 0:
            raise Finding(f"device new {args}: exit {code}")
        _finite(load_device(Path(td) / f"{args[2]}.yaml"))
        return _tally("device_new", "accepted")


OVERLAY_BASE = {
    "calibration": {"pi2sim_version": "0", "device": "oneplus12", "device_file_sha256": "x", "scenarios": "s", "points": 1,
                    "config_hash": "x", "constants": {}},
    "device": {"cpu.sparse_efficiency": 0.31, "storage.latency": "110 us"},
    "policy": {"llamacpp": {"kernel_efficiency": 0.9}},
}


def overlay_yaml(case) -> str:
    """A mutated calibration overlay: applied only when everything it claims holds; else one line."""
    from pi2sim.config import RunConfig
    from pi2sim.workflows.calibrate import apply_overlay, check_overlay, load_overlay

    name, text, path, nonsense = case

    def load(p):
        ov = load_overlay(p)
        check_overlay(ov)
        return apply_overlay(RunConfig(), ov)

    outcome = _load_text("overlay_yaml", load, name, text, None, path)
    if outcome == "accepted":
        raise Finding(f"overlay accepted though its config_hash cannot match: {text[:200]!r}")
    return outcome


TARGETS = {
    "device_yaml": (device_yaml, lambda: mutated_yaml(bundled_docs("devices"))),
    "model_yaml": (model_yaml, lambda: mutated_yaml(bundled_docs("models"))),
    "grid_yaml": (grid_yaml, lambda: mutated_yaml({"grid.yaml": GRID_BASE})),
    "trace_file": (trace_file, mutated_trace),
    "cli": (cli, cli_args),
    "path_flag": (path_flag, path_args),
    "cache_env": (cache_env, cache_text),
    "device_new": (device_new, device_new_args),
    "overlay_yaml": (overlay_yaml, lambda: mutated_yaml({"overlay.yaml": OVERLAY_BASE})),
}
