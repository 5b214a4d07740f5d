"""Helpers several policies share (public: a policy imports these, never another policy's privates)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..engine.compute import CpuPool
from ..errors import ConfigurationRefused, InputError


class EngineRefused(ConfigurationRefused):
    """The simulated engine would fail to start (out of memory, allocation limits)."""


def scaled_pool(pool: CpuPool, eff: float) -> CpuPool:
    """A pool whose cores run at ``eff`` of the device's kernel rates (engine-specific kernels)."""
    from ..specs.device import Core

    cores = tuple(
        Core(c.id, replace(c.cluster, matvec_int4_bps=c.cluster.matvec_int4_bps * eff, matvec_fp16_bps=c.cluster.matvec_fp16_bps * eff))
        for c in pool.cores
    )
    return replace(pool, cores=cores)


def kernel_pool(pool: CpuPool, matvec: float, gemm: float) -> CpuPool:
    """A pool whose cores run one engine kernel: matrix-vector work at ``matvec`` and matrix-matrix
    work at ``gemm`` of the device's INT4 rates (e.g. one GGUF block type's kernels)."""
    from ..specs.device import Core

    cores = tuple(
        Core(c.id, replace(c.cluster, matvec_int4_bps=c.cluster.matvec_int4_bps * matvec, gemm_int4_ops=c.cluster.gemm_int4_ops * gemm))
        for c in pool.cores
    )
    return replace(pool, cores=cores)


SPECULATION_KEYS = ("draft_model", "draft_tokens", "acceptance")
BEST_OF_KEYS = ("best_of", "drop_every", "npu_row_share_batched")  # the last: PowerInfer-2 only


def best_of_kv(sizes, context_tokens: int, prompt_tokens: int, best_of: int) -> float:
    """Resident KV cache bytes of ``best_of`` candidates after one prefill: the prompt's part
    shared, each candidate's own decoded part."""
    full = sizes.kv_cache(context_tokens)
    if best_of <= 1:
        return full
    prompt = sizes.kv_cache(prompt_tokens)
    return prompt + best_of * (full - prompt)


def refuse_moe_best_of(model, best_of: int) -> None:
    """Best-of-N of an MoE model is refused: the candidates route different experts, and the
    union of their experts is not modelled."""
    if best_of > 1 and model.architecture.is_moe:
        raise InputError(None, "best_of", f"a dense model for Best-of-N (the union of the candidates' experts of {model.name} is not modelled)", best_of)


def batch_schedule(n_steps: int, best_of: int, drop_every: int) -> np.ndarray:
    """[T] sequences alive in each decode step: N at the start, one fewer every ``drop_every``
    steps, never below one (the last candidate decodes to the end)."""
    return np.maximum(1, best_of - np.arange(n_steps) // drop_every).astype(np.float64)


def options_in_use(options) -> dict:
    """An engine's resolved options, without the speculation keys when it has no draft model and
    the Best-of-N keys for one sequence (so such a run resolves, and hashes, as it did before these
    options existed)."""
    from ..schema import to_dict

    d = to_dict(options)
    if not getattr(options, "draft_model", None):
        for k in SPECULATION_KEYS:
            d.pop(k, None)
    if getattr(options, "best_of", 1) == 1:
        for k in BEST_OF_KEYS:
            d.pop(k, None)
    return d
