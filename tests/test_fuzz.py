"""Fuzzed inputs (CI sample): YAML loaders, trace reader, CLI. Every rejection is a one-line
InputError, nothing crashes, no nonsense is accepted. The dedicated 10,000-input run is
``python tests/fuzz_run.py``; the coverage-guided one ``python tests/fuzz_atheris.py``."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

import fuzz_targets as F
from conftest import have, require
from pi2sim.errors import InputError
from pi2sim.specs.device import load_device
from pi2sim.specs.model import load_model

HERE = Path(__file__).resolve().parent
# derandomized: the CI sample is the same inputs on every run (a build never fails by luck);
# the dedicated run (tests/fuzz_run.py) explores with other seeds
SAMPLE = settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))


@SAMPLE
@given(F.mutated_yaml(F.bundled_docs("devices")))
def test_fuzz_device_yaml(case):
    F.device_yaml(case)


@SAMPLE
@given(F.mutated_yaml(F.bundled_docs("models")))
def test_fuzz_model_yaml(case):
    F.model_yaml(case)


@SAMPLE
@given(F.mutated_yaml({"grid.yaml": F.GRID_BASE}))
def test_fuzz_grid_yaml(case):
    F.grid_yaml(case)


@SAMPLE
@given(F.mutated_trace())
def test_fuzz_trace_file(data):
    F.trace_file(data)


@SAMPLE
@given(F.cli_args())
def test_fuzz_cli(args):
    F.cli(args)


@SAMPLE
@given(F.path_args())
def test_fuzz_path_flags(args):
    F.path_flag(args)


@SAMPLE
@given(F.cache_text())
def test_fuzz_cache_env(text):
    F.cache_env(text)


@settings(max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(F.device_new_args())
def test_fuzz_device_new(args):
    F.device_new(args)


@SAMPLE
@given(F.mutated_yaml({"overlay.yaml": F.OVERLAY_BASE}))
def test_fuzz_overlay(case):
    F.overlay_yaml(case)


def _unit_leaves(kind: str):
    for name, doc in F.bundled_docs(kind).items():
        for path in F._leaves(doc):
            v = F._get(doc, path)
            m = F.NUMBER_UNIT.match(v) if isinstance(v, str) else None
            if m and float(m.group(1)) != 0 and m.group(2) != "%":
                yield name, doc, path, float(m.group(1)), m.group(2)


def _rejected(kind: str, name: str, doc: dict, path: tuple, value) -> bool:
    d = yaml.safe_load(yaml.safe_dump(doc))
    F._set(d, path, value)
    loader = load_device if kind == "devices" else load_model
    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / name
        p.write_text(yaml.safe_dump(d))
        try:
            loader(p)
        except InputError as exc:
            assert "\n" not in exc.line() and exc.line().startswith(str(p))
            return True
    return False


@pytest.mark.parametrize("kind", ["devices", "models"])
def test_every_unit_slip_rejected(kind):
    """Every quantity with a unit in every bundled device and model YAML: the same number with a
    unit 1000x off (ns for us, MB/s for GB/s), negative, NaN, or a zero bandwidth is rejected."""
    accepted = []
    n = 0
    for name, doc, path, num, unit in _unit_leaves(kind):
        bad = [f"{num * 1000:g} {unit}", f"{num / 1000:g} {unit}", f"-{num:g} {unit}", f"nan {unit}", f"inf {unit}"]
        if unit.endswith("/s"):
            bad.append(f"0 {unit}")
        for value in bad:
            n += 1
            if not _rejected(kind, name, doc, path, value):
                accepted.append(f"{name}: {'.'.join(map(str, path))} = {value!r}")
    assert n >= 40  # every device has ~50 quantities, every model one (the predictor size)
    assert not accepted, "silently accepted:\n" + "\n".join(accepted)


@pytest.mark.parametrize("target", ["trace_file", "device_yaml", "model_yaml"])
def test_atheris_short_run(target, tmp_path):
    """A short coverage-guided run per target (the dedicated run uses -runs=10000 and more)."""
    require(have("atheris"), "atheris (the fuzz extra)")
    p = subprocess.run([sys.executable, str(HERE / "fuzz_atheris.py"), target, "-runs=400", "-seed=1"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Done 400 runs" in p.stderr
    assert not list(tmp_path.glob("crash-*"))


@pytest.mark.parametrize("text", ["cpu: &a [*a]\n", "cpu: &m {x: *m}\n", F.ALIAS_BOMB])
def test_recursive_or_exploding_aliases_are_one_line_errors(tmp_path, text):
    """YAML aliases can make a document contain itself, or expand to 10**9 nodes from 1 KB of
    text; either would hang or crash whatever walks it. Refused at parse time, in one line."""
    p = tmp_path / "dev.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as exc:
        load_device(p)
    assert exc.value.line().startswith(str(p)) and "cannot parse YAML" in exc.value.line()
    r = subprocess.run([sys.executable, "-m", "pi2sim", "run", "--device", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
