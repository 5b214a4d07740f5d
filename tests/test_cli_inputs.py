"""Bad paths and environment, as a user gives them: every one is one line on stderr naming the
flag or variable, exit status 2, the program name once, and no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pi2sim import cli


def _main(capsys, args, env=None, monkeypatch=None):
    if env:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    code = cli.main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def sandbox(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a scenario")
    return tmp_path


SMALL = ["--model", "smollm2-135m", "--decode-tokens", "2", "--quiet", "--fidelity", "analytic"]

CASES = [
    # (id, args with {tmp}, fragment the line must contain)
    ("out-under-file", ["run", *SMALL, "--out", "{tmp}/afile/sub"], "--out: expected a path whose parents are directories"),
    ("out-is-file", ["run", *SMALL, "--out", "{tmp}/afile"], "--out: expected a directory (this path is a file)"),
    ("timeline-under-file", ["run", *SMALL, "--fidelity", "cluster", "--timeline", "{tmp}/afile/t.json"], "--timeline: expected a path whose parents"),
    ("timeline-is-dir", ["run", *SMALL, "--fidelity", "cluster", "--timeline", "{tmp}/empty"], "--timeline: expected a file path (this is a directory)"),
    ("plan-missing", ["run", *SMALL, "--plan", "{tmp}/nope.yaml"], "--plan: expected an existing file"),
    ("calibration-is-dir", ["run", *SMALL, "--calibration", "{tmp}/empty"], "--calibration: expected a file (this is a directory)"),
    ("nul-byte", ["run", *SMALL, "--out", "{tmp}/a\x00b"], "--out: expected a path without NUL bytes"),
    ("name-too-long", ["run", *SMALL, "--out", "{tmp}/" + "x" * 300], "--out: expected a usable path (File name too long)"),
    ("scenarios-empty", ["validate", "--scenarios", "{tmp}/empty", "--quiet"], "cannot find a scenario: no *.yaml file"),
    ("scenarios-no-yaml", ["validate", "--scenarios", "{tmp}/notes", "--quiet"], "cannot find a scenario"),
    ("scenarios-missing", ["validate", "--scenarios", "{tmp}/nope", "--quiet"], "--scenarios: expected an existing directory"),
    ("scenarios-is-file", ["validate", "--scenarios", "{tmp}/afile", "--quiet"], "--scenarios: expected a directory (this path is a file)"),
    ("validate-out-under-file", ["validate", "--only", "T13.ufs*", "--out", "{tmp}/afile/o", "--quiet"], "--out: expected a path whose parents"),
    ("grid-missing", ["sweep", "{tmp}/nope.yaml"], "grid: expected an existing file"),
    ("sweep-out-is-dir", ["sweep", "{tmp}/afile", "--out", "{tmp}/empty"], "--out: expected a file path (this is a directory)"),
    ("suite-without-scenarios", ["regress", "--suite", "{tmp}/empty"], "--suite: expected a directory with a scenarios.yaml"),
    ("suite-missing", ["regress", "--suite", "{tmp}/nope"], "--suite: expected an existing directory"),
    ("calibrate-out-is-dir", ["calibrate", "--out", "{tmp}/empty"], "--out: expected a file path (this is a directory)"),
    ("compare-out-under-file", ["compare", *SMALL, "--out", "{tmp}/afile/x"], "--out: expected a path whose parents"),
    ("plan-out-under-file", ["plan", "--out", "{tmp}/afile/p.yaml"], "--out: expected a path whose parents"),
    ("trace-stats-out-under-file", ["trace", "stats", "smollm2-135m", "--out", "{tmp}/afile/s"], "--out: expected a path whose parents"),
    ("parse-error-names-program-once", ["run", "--decode-tokens", "x"], "run: cannot parse arguments"),
    ("unknown-command", ["bogus"], "cannot parse arguments"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_path_is_one_line_exit_2(case, sandbox, capsys):
    _, args, fragment = case
    code, err = _main(capsys, [a.replace("{tmp}", str(sandbox)) for a in args])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    assert "Traceback" not in err
    assert lines[0].startswith("pi2sim: ") and lines[0].count("pi2sim") == 1 + lines[0].count("pi2sim regress"), lines[0]
    assert fragment in lines[0], lines[0]


def test_cache_env_pointing_at_a_file(sandbox, capsys, monkeypatch):
    """The synthetic trace lives in the cache: a cache path that is a file is refused, naming the variable."""
    code, err = _main(capsys, ["run", "--decode-tokens", "2", "--quiet", "--fidelity", "analytic"],
                      env={"PI2SIM_CACHE": str(sandbox / "afile")}, monkeypatch=monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("pi2sim: $PI2SIM_CACHE: expected a directory (this path is a file), got '")


def test_cache_env_under_a_file(sandbox, capsys, monkeypatch):
    code, err = _main(capsys, ["run", "--decode-tokens", "2", "--quiet", "--fidelity", "analytic"],
                      env={"PI2SIM_CACHE": str(sandbox / "afile" / "cache")}, monkeypatch=monkeypatch)
    assert code == 2 and "$PI2SIM_CACHE: expected a path whose parents are directories" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_out_dir(sandbox, capsys):
    ro = sandbox / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, err = _main(capsys, ["run", *SMALL, "--out", str(ro / "x")])
        assert code == 2 and "not writable" in err
    finally:
        ro.chmod(0o700)


def test_huge_grid_is_refused_at_once(sandbox, capsys):
    """10^8 points: refused before a single point is built, with its size and how to split it."""
    grid = sandbox / "huge.yaml"
    grid.write_text("base: {model: smollm2-135m, decode_tokens: 2}\n"
                    "factors:\n  memory_gb: {from: 1, to: 100000, step: 1}\n  compute_threads: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
                    "  seed: {from: 0, to: 99, step: 1}\n")
    code, err = _main(capsys, ["sweep", str(grid)])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "at most 1,000,000 points; this grid has 100,000,000 (100,000 memory_gb x 10 compute_threads x 100 seed)" in err
    assert "split it" in err


def test_huge_range_is_refused_before_it_is_built(sandbox, capsys):
    grid = sandbox / "range.yaml"
    grid.write_text("base: {model: smollm2-135m}\nfactors:\n  memory_gb: {from: 0, to: 1000000000000, step: 1}\n")
    code, err = _main(capsys, ["sweep", str(grid)])
    assert code == 2 and "at most 1,000,000 values" in err


def test_good_paths_are_created(tmp_path, capsys):
    out = tmp_path / "new" / "deeper"
    code, _ = _main(capsys, ["run", *SMALL, "--out", str(out)])
    assert code == 0 and (out / "summary.json").is_file()
    assert Path(out / "tokens.csv").is_file()


def test_command_map_names_every_command():
    """``pi2sim run ...`` builds the parser of run's module only (commands.COMMANDS): the map must
    name every command the full parser has, each with the module that registers it."""
    import argparse

    from pi2sim.cli import build_parser
    from pi2sim.commands import COMMANDS

    def names(parser):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return set(sub.choices)

    assert names(build_parser()) == set(COMMANDS)
    for cmd in COMMANDS:
        assert cmd in names(build_parser(cmd))
