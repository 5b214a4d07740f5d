"""A phone from its spec sheet (pi2sim/specs/rules.py, devices/catalogue/, `pi2sim device`)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pi2sim.specs import rules
from pi2sim.specs.device import load_device
from pi2sim.specs.provenance import undocumented


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, cwd=cwd)


def _flat(obj, prefix=""):
    out = {}
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            out.update(_flat(getattr(obj, f.name), f"{prefix}{f.name}."))
    elif isinstance(obj, (list, tuple)):
        for i, x in enumerate(obj):
            out.update(_flat(x, f"{prefix}{i}."))
    elif isinstance(obj, dict):
        for k, x in obj.items():
            out.update(_flat(x, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = obj
    return out


def test_the_rules_give_back_the_reference_phone(tmp_path):
    """Applied to the reference's own SoC, the rules reproduce the measured OnePlus 12 (its file's
    derived values are rounded to 3 digits): a rule that drifts from the reference fails here."""
    path = tmp_path / "op12.yaml"
    path.write_text(rules.device_yaml("op12", "snapdragon-8-gen-3", 24e9, "ufs4.0", battery_wh=5400 * rules.NOMINAL_CELL_V / 1000))
    ref, gen = _flat(load_device("oneplus12")), _flat(load_device(path))
    for key, v in ref.items():
        if key.split(".")[-1] in ("name", "path", "description", "soc") or isinstance(v, (str, bool)) or v is None:
            continue
        assert gen[key] == pytest.approx(v, rel=0.01, abs=1e-12), key


def test_shipped_generated_phones_are_what_the_rules_give():
    r = _cli("device", "regenerate", "--check")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", sorted(rules.shipped_phones()))
def test_every_generated_value_cites_its_rule(name):
    from pi2sim import resources

    path = resources.data_dir("devices") / f"{name}.yaml"
    assert not undocumented(path)
    dev = load_device(path)
    assert dev.power is not None and dev.thermal is not None  # every phone reports energy (derived)


def test_device_new_writes_a_file_that_needs_no_edits(tmp_path):
    r = _cli("device", "new", "s23", "--soc", "snapdragon-8-gen-2", "--ram", "8 GB", "--storage", "ufs3.1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dev = load_device(tmp_path / "s23.yaml")
    assert dev.storage.type == "ufs3.1" and dev.dram.app_usable_bytes == pytest.approx(4e9)
    assert [c.core for c in dev.cpu.clusters] == ["cortex-x3", "cortex-a715", "cortex-a710", "cortex-a510"]
    assert not undocumented(tmp_path / "s23.yaml")
    again = _cli("device", "new", "s23", "--soc", "snapdragon-8-gen-2", "--ram", "8 GB", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr  # never overwritten silently


def test_a_soc_outside_the_catalogue_from_its_clusters(tmp_path):
    r = _cli("device", "new", "custom", "--clusters", "1x cortex-x3@3.36GHz,2x cortex-a715@2.8GHz,2x cortex-a710@2.8GHz,3x cortex-a510@2GHz",
             "--ram", "8 GB", "--out", "-")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "custom.yaml"
    path.write_text(r.stdout)
    assert load_device(path).cpu.clusters[0].clock_hz == pytest.approx(3.36e9)


@pytest.mark.parametrize("args, key", [
    (["x", "--soc", "snapdragon-9-gen-9", "--ram", "8 GB"], "--soc"),
    (["x", "--soc", "dimensity-8400", "--ram", "8 parsecs"], "--ram"),
    (["x", "--soc", "dimensity-8400", "--ram", "1 TB"], "--ram"),
    (["x", "--soc", "dimensity-8400", "--ram", "8 GB", "--storage", "emmc"], "--storage"),
    (["x", "--clusters", "2x cortex-z9@3GHz", "--ram", "8 GB"], "--clusters"),
    (["x", "--clusters", "1x cortex-x3@30GHz", "--ram", "8 GB"], "--clusters"),
    (["Bad Name", "--soc", "dimensity-8400", "--ram", "8 GB"], "NAME"),
    (["x", "--soc", "dimensity-8400", "--ram", "8 GB", "--battery", "lots"], "--battery"),
])
def test_bad_device_new_input_is_one_line(args, key, tmp_path):
    r = _cli("device", "new", *args, "--out", str(tmp_path / "x.yaml"), cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and key in lines[0], r.stderr


def test_app_memory_rule():
    assert rules.app_memory(8e9) == pytest.approx(4e9)  # half of an 8 GB phone (not 8 - 5 = 3 GB)
    assert rules.app_memory(16e9) == pytest.approx(11e9) and rules.app_memory(24e9) == pytest.approx(19e9)  # PI2 v3 Table 3
    assert 6e9 < rules.app_memory(12e9) < 9e9


def test_a_phone_without_a_hexagon_npu_has_no_npu_section():
    dev = load_device("poco_x7_pro")
    assert dev.npu is None and dev.gpu is not None and dev.power.npu is None


def test_socs_and_cores_list():
    r = _cli("device", "socs")
    assert r.returncode == 0 and "snapdragon-8-elite-gen-5" in r.stdout and "dimensity-8400" in r.stdout and "tensor-g4" in r.stdout
    r = _cli("device", "cores")
    assert r.returncode == 0 and "cortex-a725" in r.stdout and "oryon-v3" in r.stdout


def test_every_catalogue_soc_generates_a_loadable_phone(tmp_path):
    for soc in rules.socs():
        path = tmp_path / "p.yaml"
        path.write_text(rules.device_yaml("p", soc, 12e9))
        assert load_device(path).cpu.clusters, soc
