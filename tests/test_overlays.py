"""Calibration overlays are validated like every other input (issue 34): a truncated, out-of-bounds,
foreign, unused or stale overlay is refused in one line, never applied silently."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pi2sim.errors import InputError
from pi2sim.workflows import calibrate as C

RUN = ["run", "--model", "bamboo-7b", "--decode-tokens", "2", "--fidelity", "analytic", "--quiet"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True)


def _overlay(tmp_path, values=(0.31, 1.1e-4), device="oneplus12"):
    free = [c for c in C.free_constants(device) if c.name in ("cpu.sparse_efficiency", "storage.latency")]
    ev = C.Evaluation([0.0], [1.0])
    fit = C.Fit(free, list(values), [c.value for c in free], ev, ev, ["X"], 1, "test")
    path = tmp_path / "cal.yaml"
    C.write_overlay(path, C.overlay_dict(fit, device, "test"))
    return path


def _refused(args, needle):
    r = _cli(*args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr and needle in lines[0], r.stderr
    return lines[0]


def test_a_valid_overlay_applies(tmp_path):
    r = _cli(*RUN, "--calibration", str(_overlay(tmp_path)))
    assert r.returncode == 0, r.stderr


def test_a_truncated_overlay_is_refused(tmp_path):
    path = _overlay(tmp_path)
    text = path.read_text()
    path.write_text(text[: text.index("device:\n") + len("device:\n")] + "  cpu.sparse_efficiency: 0.31\n")  # cut after one value
    _refused([*RUN, "--calibration", str(path)], "config_hash")
    path.write_text(text[: len(text) // 3])
    r = _cli(*RUN, "--calibration", str(path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def _edit(path, fn):
    data = yaml.safe_load(path.read_text())
    fn(data)
    import hashlib
    import json

    body = json.dumps({"device": data.get("device") or {}, "policy": data.get("policy") or {}}, sort_keys=True, default=str)
    data["calibration"]["config_hash"] = hashlib.sha256(body.encode()).hexdigest()[:16]  # a consistent hand edit
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_value_outside_its_bounds_is_refused(tmp_path):
    path = _overlay(tmp_path)
    _edit(path, lambda d: d["device"].update({"storage.latency": "900 us"}))
    _refused([*RUN, "--calibration", str(path)], "bounds")


def test_a_constant_outside_the_free_set_is_refused(tmp_path):
    path = _overlay(tmp_path)
    _edit(path, lambda d: d["device"].update({"storage.page": "16 KiB"}))
    _refused([*RUN, "--calibration", str(path)], "free set")
    path = _overlay(tmp_path)
    _edit(path, lambda d: d.update({"policy": {"powerinfer2": {"compute_threads": 4}}}))
    _refused([*RUN, "--calibration", str(path)], "free set")


def test_an_overlay_for_another_engine_only_is_refused(tmp_path):
    path = _overlay(tmp_path)
    _edit(path, lambda d: (d.update({"device": {}}), d.update({"policy": {"llamacpp": {"kernel_efficiency": 0.9}}})))
    _refused([*RUN, "--calibration", str(path)], "would change nothing")
    assert _cli(*RUN, "--policy", "llamacpp", "--set", "build=2024", "--calibration", str(path)).returncode == 0


def test_a_stale_device_hash_is_refused_unless_allowed(tmp_path):
    path = _overlay(tmp_path)
    _edit(path, lambda d: d["calibration"].update({"device_file_sha256": "0123456789abcdef"}))
    line = _refused([*RUN, "--calibration", str(path)], "device_file_sha256")
    assert "pi2sim calibrate" in line and "--allow-stale-calibration" in line
    assert _cli(*RUN, "--calibration", str(path), "--allow-stale-calibration").returncode == 0


@pytest.mark.parametrize("bounds", ["60 us..200", "60..200 us"])
def test_bounds_need_the_unit_on_both_sides_or_neither(bounds):
    with pytest.raises(InputError, match="both sides"):
        C.parse_bounds(f"fitted to X; bounds: {bounds})", "f.yaml", "storage.latency")
    assert C.parse_bounds("bounds: 60 us..200 us") == pytest.approx((60e-6, 200e-6))


def test_cross_validation_of_one_group_is_refused(tmp_path):
    from pi2sim.workflows import validate as V

    one = [s for s in V.load_scenarios("calibration") if s.id == "T2"]
    with pytest.raises(InputError, match="at least two"):
        C.cross_validate(one)


@pytest.mark.parametrize("policy, quant", [("powerinfer2", "q4f16_1"), ("llm-in-a-flash", "8da4w"), ("llamacpp", "8da4w"),
                                           ("genie", "q4_0"), ("executorch", "q4_k_m"), ("mlc", "w4a16")])
def test_every_engine_refuses_a_weight_format_it_does_not_run(policy, quant):
    _refused(["run", "--policy", policy, "--model", "bamboo-7b", "--set", f"quant={quant}", "--decode-tokens", "2", "--quiet"], "weight format")


def test_regress_checks_its_golden_file_before_running_anything(tmp_path):
    import time

    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "scenarios.yaml").write_text("scenarios:\n  - id: a\n    title: t\n    run: {model: bamboo-7b, decode_tokens: 64}\n")
    (suite / "golden.json").write_text('{"scenarios": {"a": ')
    t = time.time()
    r = _cli("regress", "--suite", str(suite))
    assert r.returncode == 2 and "golden.json" in r.stderr and "[regress] a" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.time() - t < 30
