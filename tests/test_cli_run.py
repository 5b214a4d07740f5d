"""`pi2sim run` end to end, and every class of bad input: one line, exit status 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pi2sim import resources

REQUIRED_KEYS = {
    "decode_tok_s", "prefill_tok_s", "ttft_ms", "tbt_ms", "peak_memory_gb", "memory_breakdown_gb",
    "flash_bytes_per_token", "flash_reads_per_token", "neuron_cache_hit_rate", "critical_path", "utilization", "config",
}


def run(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_run_json_from_another_directory(tmp_path):
    code, out, err = run("run", "--device", "oneplus12.yaml", "--model", "smollm2-135m", "--decode-tokens", "8", "--json", "--quiet", cwd=tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert REQUIRED_KEYS <= set(summary)
    assert summary["config"]["run"]["device"] == "oneplus12"


def test_run_human_and_out_dir(tmp_path):
    code, out, err = run("run", "--model", "smollm2-135m", "--decode-tokens", "8", "--out", str(tmp_path / "o"), "--quiet")
    assert code == 0, err
    assert "tok/s" in out and "where the time goes" in out and "memory" in out
    assert (tmp_path / "o" / "summary.json").is_file() and (tmp_path / "o" / "tokens.csv").is_file()
    assert len((tmp_path / "o" / "tokens.csv").read_text().splitlines()) == 9


def test_policy_help_documents_every_option():
    code, out, _ = run("run", "--policy", "powerinfer2", "--help")
    assert code == 0
    from pi2sim.policies import get
    from pi2sim.schema import describe_fields

    for key, *_ in describe_fields(get("powerinfer2").Options):
        assert key in out
    assert "presets of powerinfer2" in out and "+pipeline" in out


def _bad_device(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((resources.data_dir("devices") / "oneplus12.yaml").read_text())
    mutate(data)
    p = tmp_path / "oneplus12.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


DEVICE_MUTATIONS = {
    "unknown key": (lambda d: d["storage"].__setitem__("turbo", 1), "storage.turbo"),
    "missing key": (lambda d: d["dram"].pop("bw_cpu"), "dram.bw_cpu"),
    "bad unit": (lambda d: d["storage"].__setitem__("latency", "80 parsecs"), "storage.latency"),
    "no unit": (lambda d: d["storage"].__setitem__("latency", 80), "storage.latency"),
    "negative size": (lambda d: d["dram"].__setitem__("size", "-24 GB"), "dram.size"),
    "zero bandwidth": (lambda d: d["storage"].__setitem__("bw_random", "0 GB/s"), "storage.bw_random"),
    "NaN": (lambda d: d["cpu"].__setitem__("sparse_efficiency", float("nan")), "cpu.sparse_efficiency"),
    "1000x unit slip": (lambda d: d["storage"].__setitem__("latency", "80 ms"), "storage.latency"),
    "inconsistent": (lambda d: d["dram"].__setitem__("app_usable", "30 GB"), "app_usable"),
    "bad list item": (lambda d: d["cpu"]["clusters"][1].__setitem__("count", 0), "cpu.clusters[1].count"),
    "loader's own field": (lambda d: d.__setitem__("path", "/etc/passwd"), "path"),
}


@pytest.mark.parametrize("name", list(DEVICE_MUTATIONS))
def test_bad_device_yaml(tmp_path, name):
    mutate, key = DEVICE_MUTATIONS[name]
    p = _bad_device(tmp_path, mutate)
    code, out, err = run("run", "--device", str(p), "--model", "smollm2-135m", "--decode-tokens", "4", "--quiet")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(p) in lines[0] and key in lines[0], lines[0]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--memory-gb", "0.01"], "at least"),  # cannot fit even with all FFN in flash
        (["--memory-gb", "50"], "lets one app use"),  # more than the phone allows
        (["--ffn-offload", "1.5"], "--ffn-offload"),
        (["--memory-gb", "2", "--ffn-offload", "0.5"], "not allowed"),
        (["--decode-tokens", "0"], "--decode-tokens"),
        (["--decode-tokens", "many"], "--decode-tokens"),
        (["--decode-tokens", "100000"], "decode tokens"),  # beyond the trace
        (["--policy", "magic"], "--policy"),
        (["--device", "pixel99"], "--device"),
        (["--set", "compute_threads=99"], "compute_threads"),
        (["--set", "compute_cores=prime0,bogus3"], "compute_cores"),
        (["--set", "preset=v9"], "preset"),
        (["--set", "nokeyvalue"], "key=value"),
        (["--set", "device.storage.latency=fast"], "storage.latency"),
        (["--set", "device.nope=1"], "device"),
        (["--set", "quant=int3"], "quant"),
        (["--set", "sparsity=0.7"], "sparsity"),  # ReLU-family trace has no levels
        (["--trace", "/no/such.pi2t"], "does not exist"),
    ],
)
def test_bad_run_input(args, fragment):
    base = ["run", "--model", "bamboo-7b", "--decode-tokens", "4", "--quiet"]
    if "--decode-tokens" in args:
        base = ["run", "--model", "smollm2-135m", "--quiet"]
    code, out, err = run(*base, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert fragment in lines[0], lines[0]


def test_trace_of_another_model_is_rejected(tmp_path):
    code, _, err = run("run", "--model", "bamboo-7b", "--trace", "smollm2-135m", "--decode-tokens", "4", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bamboo-7b" in err and "smollm2" in err
