"""`pi2sim trace ...` from the command line: outputs, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pi2sim.cli import main

from conftest import BUNDLED_TRACE


def run(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_info_and_verify(capsys):
    assert main(["trace", "info", str(BUNDLED_TRACE)]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "decode" in out
    assert main(["trace", "verify", "smollm2-135m"]) == 0  # bundled name resolves
    assert "all checksums match" in capsys.readouterr().out
    assert main(["trace", "info", "smollm2-135m", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["n_layers"] == 30


def test_stats_from_another_directory(tmp_path):
    code, out, err = run("trace", "stats", "smollm2-135m", "--level", "0.9", "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert code == 0, err
    assert "hot@80" in out and "(0.600)" in out  # reference printed beside
    assert (tmp_path / "s.json").is_file() and (tmp_path / "s.csv").is_file()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["trace", "stats", "/no/such.pi2t"], "does not exist"),
        (["trace", "stats", "no-such-model"], "--model"),
        (["trace", "synth", "--model", "smollm2-135m"], "synthetic"),
        (["trace", "synth", "--model", "bamboo-7b", "--tokens", "0"], "positive integer"),
        (["trace", "synth"], "required"),
        (["trace", "stats", "smollm2-135m", "--level", "0.55"], "recorded levels"),
        (["trace", "record", "--out", "x.pi2t", "--levels", "0.5,abc"], "--levels"),
        (["trace", "frobnicate"], "invalid choice"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, fragment, tmp_path):
    code, out, err = run(*args, cwd=tmp_path)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and fragment in lines[0], err


def test_corrupt_trace_one_line(tmp_path):
    bad = tmp_path / "bad.pi2t"
    data = bytearray(BUNDLED_TRACE.read_bytes()[:200000])
    bad.write_bytes(bytes(data))
    code, _, err = run("trace", "verify", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "truncated" in err


def test_synth_check_prints_targets(tmp_path):
    code, out, err = run("trace", "synth", "--model", "bamboo-7b", "--tokens", "64", "--check", "--out", str(tmp_path / "b.pi2t"))
    assert code == 0, err
    assert "hot@80" in out and "profile" in out and (tmp_path / "b.pi2t").is_file()
