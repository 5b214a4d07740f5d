"""pi2sim: a discrete-event simulator of LLM inference on smartphones.

Specs (device, model, policy, trace) feed an access model (which neurons are active, cached,
read from flash) and a timing engine (SimPy resources for cores, NPU, UFS and DRAM bandwidth);
reports explain where the time and the memory went.
"""

from .version import __version__

__all__ = ["RunConfig", "SimResult", "__version__", "run", "simulate", "sweep"]


def __getattr__(name: str):
    # Imported on first use so that `pi2sim --help` and the trace tools stay light.
    if name in ("simulate", "run", "SimResult"):
        from . import simulation

        return getattr(simulation, name)
    if name == "sweep":
        from .workflows.sweeps import sweep

        return sweep
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    raise AttributeError(f"module 'pi2sim' has no attribute {name!r}")
