"""Model sizes and memory accounting.

:class:`ModelBytes` gives the size of every tensor group of a model under a quantization;
:class:`MemoryPlan` is what a policy keeps resident, component by component, against the budget
the user gave (``--memory-gb``: memory available to the app, as in PowerInfer-2's memory sweep;
or ``--ffn-offload``: share of FFN weights left in flash, as in its decoding grids).

For TurboSparse-Mixtral-47B at 7 GB this reproduces PowerInfer-2's breakdown (v3 §7.2.3) from
the model shape: non-FFN 1.05 GB (paper 1.0), predictors 2.61 GB (2.6), FFN scales 2.82 GB
(2.7), runtime 0.3 GB, i.e. 6.78 GB fixed (6.6) and a 0.22 GB neuron cache (0.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import ConfigurationRefused
from ..specs.model import ModelSpec
from ..specs.quant import QuantFormat

GB = 1e9
RUNTIME_BYTES = 0.3e9  # PowerInfer-2 v3 §7.2.3 ("runtime 0.3 GB", TurboSparse-Mixtral-47B at 7 GB)
KV_BYTES_PER_VALUE = 2  # FP16 KV cache (assumption; the paper does not say)


@dataclass(frozen=True)
class ModelBytes:
    """Sizes (bytes) of a model's tensor groups under a quantization."""

    model: ModelSpec
    quant: QuantFormat

    @property
    def arch(self):
        return self.model.architecture

    @property
    def bpw(self) -> float:
        """Bytes per weight of the layers' matrices (a GGUF file: the exact mean of its mixture)."""
        if self.quant.gguf:
            return _gguf_layer_bpw(self.arch, self.quant)
        return self.quant.dram_bytes_per_weight()

    def gguf(self):
        """The GGUF file's matrices by block type (:func:`pi2sim.specs.quant.gguf_layer_bytes`), or None."""
        return _gguf(self.arch, self.quant) if self.quant.gguf else None

    # dense, always-read tensors
    def attention_per_layer(self) -> float:
        """Q, K, V and O weights (and 16-bit QKV biases) of one layer (a GGUF mixture: the layers' mean)."""
        if self.quant.gguf:
            g = self.gguf()
            return sum(sum(d.values()) for d in g.attention) / self.arch.layers + 2.0 * self.arch.attention_bias_params_per_layer
        return self.arch.attention_params_per_layer * self.bpw + 2.0 * self.arch.attention_bias_params_per_layer

    def attention(self) -> float:
        return self.arch.layers * self.attention_per_layer()

    def embeddings(self) -> float:
        if self.quant.gguf:
            return self.gguf().token_embd[1]
        return self.arch.embedding_params * self.quant.embedding_bytes_per_weight()

    def lm_head(self) -> float:
        """Bytes the LM head streams per token (the tied embedding matrix if tied)."""
        if self.quant.gguf:
            return self.gguf().output[1]
        return self.arch.vocab * self.arch.hidden * self.quant.head_bytes_per_weight()

    def lm_head_storage(self) -> float:
        """The head's own bytes: none if it is the tied embedding, unless the format stores it apart."""
        return 0.0 if (self.arch.tied_embeddings and not self.quant.separate_head) else self.lm_head()

    def router_per_layer(self) -> float:
        return self.arch.router_params_per_layer * self.bpw

    def norms(self) -> float:
        return (2 * self.arch.layers + 1) * self.arch.hidden * 4  # FP32 norm weights

    def non_ffn(self) -> float:
        """Embeddings, attention, LM head, routers, norms (everything but FFN weights and KV)."""
        return self.embeddings() + self.attention() + self.lm_head_storage() + self.arch.layers * self.router_per_layer() + self.norms()

    # FFN
    def ffn_neurons_total(self) -> int:
        a = self.arch
        return a.layers * a.experts * a.ffn_neurons

    def matrix_neuron_weight_bytes(self) -> float:
        return self.quant.weight_bytes(self.arch.hidden)

    def neuron_weight_bytes(self) -> float:
        """Weights (no scales) of one FFN neuron: its Gate, Up and Down vectors."""
        return self.arch.matrices_per_neuron * self.matrix_neuron_weight_bytes()

    def neuron_scale_bytes(self) -> float:
        return self.arch.matrices_per_neuron * self.quant.scale_bytes(self.arch.hidden)

    def ffn_weights(self) -> float:
        if self.quant.gguf:  # the exact mixture, split into quants and block scales as its base type is
            return self._gguf_ffn() * self._gguf_weight_share()
        return self.ffn_neurons_total() * self.neuron_weight_bytes()

    def ffn_scales(self) -> float:
        if self.quant.gguf:
            return self._gguf_ffn() * (1.0 - self._gguf_weight_share())
        return self.ffn_neurons_total() * self.neuron_scale_bytes()

    def _gguf_ffn(self) -> float:
        return self.arch.experts * sum(sum(d.values()) for d in self.gguf().ffn)

    def _gguf_weight_share(self) -> float:
        return (self.quant.weight_bits / 8) / self.quant.dram_bytes_per_weight()

    def ffn_total(self) -> float:
        return self.ffn_weights() + self.ffn_scales()

    def predictors(self) -> float:
        a = self.arch
        return a.layers * a.experts * self.model.predictor.bytes_per_block

    def predictor_per_token_layer(self) -> float:
        """Predictor bytes read per token and layer (routed experts only)."""
        return self.arch.top_k * self.model.predictor.bytes_per_block

    def kv_cache(self, context_tokens: int) -> float:
        """KV cache of a context (a sliding-window layer keeps at most its window)."""
        a = self.arch
        kept = np.minimum(float(context_tokens), a.kv_window()).sum()
        return float(2 * a.kv_heads * a.head_dim * kept * KV_BYTES_PER_VALUE)

    def kv_per_token_layer(self, context_tokens):
        """KV bytes a token's attention reads: ``context_tokens`` [T, 1] -> [T, L] (each layer
        within its window)."""
        a = self.arch
        return 2 * a.kv_heads * a.head_dim * np.minimum(context_tokens, a.kv_window()) * KV_BYTES_PER_VALUE

    def activations(self, prompt_tokens: int) -> float:
        """Working buffers: the prefill activations of one layer (hidden + FFN width) in FP32."""
        a = self.arch
        return 4.0 * prompt_tokens * (2 * a.hidden + a.ffn_neurons * a.top_k) + 4.0 * a.vocab

    def total(self) -> float:
        return self.non_ffn() + self.ffn_total()


@lru_cache(maxsize=64)
def _gguf(arch, quant):
    from ..specs.quant import gguf_layer_bytes

    return gguf_layer_bytes(arch, quant)


@lru_cache(maxsize=64)
def _gguf_layer_bpw(arch, quant) -> float:
    g = _gguf(arch, quant)
    total = sum(sum(d.values()) for d in g.attention) + arch.experts * sum(sum(d.values()) for d in g.ffn)
    return total / (arch.layers * (arch.attention_params_per_layer + arch.ffn_params_per_layer))


@dataclass
class MemoryPlan:
    """What stays resident, by component (bytes), and the budget it must fit."""

    budget: float
    components: dict[str, float] = field(default_factory=dict)
    neuron_cache: float = 0.0  # bytes of FFN weights cached (hot + cold regions, or page cache)
    cache_units: int = 0  # what that cache holds, in the policy's unit (neurons; page-cache blocks for llama.cpp)
    notes: list[str] = field(default_factory=list)
    condition: str | None = None  # the memory condition when the run named none and the engine chose it (e.g. "in memory")

    @property
    def fixed(self) -> float:
        return sum(self.components.values())

    @property
    def total(self) -> float:
        return self.fixed + self.neuron_cache

    def breakdown_gb(self) -> dict[str, float]:
        out = {k: round(v / GB, 6) for k, v in self.components.items()}
        out["neuron_cache"] = round(self.neuron_cache / GB, 6)
        return out

    def check(self) -> None:
        if self.total > self.budget * (1 + 1e-9):
            raise AssertionError(f"memory plan {self.total / GB:.3f} GB exceeds the budget {self.budget / GB:.3f} GB")


def sparse_resident(s: "ModelBytes", context_tokens: int, prompt_tokens: int) -> dict[str, float]:
    """What a predictor-driven sparse engine (PowerInfer-2, LLM in a Flash) keeps resident besides
    FFN neurons: everything but the FFN, the KV cache, activations, predictors, the runtime."""
    return {
        "non_ffn_weights": s.non_ffn(),
        "kv_cache": s.kv_cache(context_tokens),
        "activations": s.activations(prompt_tokens),
        "predictors": s.predictors(),
        "runtime": RUNTIME_BYTES,
    }


def budget_from(
    memory_gb: float | None, ffn_offload: float | None, fixed: float, ffn_bytes: float, app_usable: float, device_name: str,
    resident_ffn: float = 0.0,
) -> tuple[float, float]:
    """(budget bytes, bytes available for FFN weights in DRAM) for a memory condition.

    ``memory_gb``: everything the app may use; ``ffn_offload``: the share F of the FFN's bytes
    kept in flash, so the budget is the non-FFN fixed part plus (1 - F) of the FFN. ``ffn_bytes``
    is the whole FFN as the engine stores it; ``resident_ffn`` is the part of it that ``fixed``
    already holds whatever F is (PowerInfer-2's quantization scales, v3 §7.2.3): it counts inside
    the (1 - F) share, not on top of it. This is the reading that admits the paper's Ace 2
    condition (75% of Mixtral's FFN in flash within 11 GB, docs/sources.md §C T23) and leaves T6's
    breakdown (a --memory-gb point) as it was. Either way the budget may not exceed what the
    phone lets one app use.
    """
    if memory_gb is not None:
        budget = memory_gb * GB
        where = "--memory-gb"
    else:
        share = 0.5 if ffn_offload is None else ffn_offload
        # a share so high that (1 - F) of the FFN is less than its resident part leaves no neuron
        # cache, but the resident part stays (--ffn-offload 1: every neuron in flash)
        budget = max(fixed, fixed - resident_ffn + (1.0 - share) * ffn_bytes)
        where = "--ffn-offload"
    if budget > app_usable * (1 + 1e-9):
        raise ConfigurationRefused(
            None,
            where,
            f"a memory budget within what {device_name} lets one app use ({app_usable / GB:g} GB); this one needs {budget / GB:.2f} GB",
        )
    avail = budget - fixed
    if avail < -1e-6:
        raise ConfigurationRefused(
            None,
            where,
            f"at least {fixed / GB:.2f} GB{' (a smaller --ffn-offload)' if where == '--ffn-offload' else ''}: the model's resident part alone (weights other than the FFN, predictors, scales, KV cache, runtime) needs that even with every FFN weight in flash",
        )
    return budget, max(0.0, avail)
