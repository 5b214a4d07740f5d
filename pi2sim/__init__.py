"""pi2sim: a discrete-event simulator of LLM inference on smartphones.

Specs (device, model, policy, trace) feed an access model (which neurons are active, cached,
read from flash) and a timing engine (SimPy resources for cores, NPU, UFS and DRAM bandwidth);
reports explain where the time and the memory went.
"""

__version__ = "0.1.0"
