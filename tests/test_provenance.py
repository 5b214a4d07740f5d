"""Every number in a device, model or synthetic-profile YAML cites its source (or says derived,
assumption, or fitted to <target>)."""

from __future__ import annotations

import pytest

from pi2sim import resources
from pi2sim.specs.provenance import is_numeric, undocumented

FILES = sorted(
    list(resources.data_dir("devices").glob("*.yaml"))
    + list(resources.data_dir("models").glob("*.yaml"))
    + list((resources.data_dir("traces") / "profiles").glob("*.yaml"))
    + list((resources.data_dir("devices") / "catalogue").glob("*.yaml"))
)


def test_there_are_files_to_check():
    assert len(FILES) >= 15


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_number_is_documented(path):
    missing = undocumented(path)
    assert not missing, [f"{m.key} = {m.value} (line {m.line})" for m in missing]


def test_numeric_detection():
    assert is_numeric("4 GB/s") and is_numeric("0.57") and is_numeric("10.2 MB") and is_numeric("3.3 GHz")
    assert not is_numeric("drelu") and not is_numeric("synthetic") and not is_numeric("true")
