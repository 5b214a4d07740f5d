"""pi2sim: a discrete-event simulator of LLM inference on smartphones.

Specs (device, model, policy, trace) feed an access model (which neurons are active, cached,
read from flash) and a timing engine (SimPy resources for cores, NPU, UFS and DRAM bandwidth);
reports explain where the time and the memory went.
"""

__version__ = "0.1.0"

__all__ = ["simulate", "run", "sweep", "SimResult", "RunConfig"]


def __getattr__(name: str):
    # Imported on first use so that `pi2sim --help` and the trace tools stay light.
    if name in ("simulate", "run", "SimResult"):
        from . import simulation

        return getattr(simulation, name)
    if name == "sweep":
        from .sweeps import sweep

        return sweep
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'pi2sim' has no attribute {name!r}")
