"""The models of each loads by name, and the attention variants change
the work and memory per token where they should (grouped KV heads, head dimensions, QKV bias,
tied embeddings, sliding-window layers); a dense model without a trace runs with dense engines
only, and a sparse engine refuses it in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pi2sim import simulate
from pi2sim.policies.memory import KV_BYTES_PER_VALUE, ModelBytes
from pi2sim.specs.model import load_model
from pi2sim.specs.quant import get_format

NAMES = ["llama-3.2-1b", "llama-3.2-3b", "llama-3-8b", "llama-3.1-8b", "llama-2-7b", "mistral-7b-v0.3", "qwen2-0.5b", "qwen2.5-3b",
         "qwen2.5-7b", "qwen3-0.6b", "qwen3-1.7b", "phi-3.5-mini", "smallthinker-21b-a3b", "smallthinker-4b-a0.6b"]


def _bytes(name: str) -> ModelBytes:
    return ModelBytes(load_model(name), get_format("int4"))


@pytest.mark.parametrize("name", NAMES)
def test_every_model_loads_with_a_plausible_size(name):
    m = load_model(name)
    a = m.architecture
    assert m.name == name and a.heads % a.kv_heads == 0
    # total parameters within 15% of the size the name states (embeddings included)
    stated = {"llama-3.2-1b": 1.24e9, "llama-3.2-3b": 3.21e9, "llama-3-8b": 8.03e9, "llama-3.1-8b": 8.03e9, "llama-2-7b": 6.74e9,
              "mistral-7b-v0.3": 7.25e9, "qwen2-0.5b": 0.49e9, "qwen2.5-3b": 3.09e9, "qwen2.5-7b": 7.62e9, "qwen3-0.6b": 0.6e9,
              "qwen3-1.7b": 1.7e9, "phi-3.5-mini": 3.82e9, "smallthinker-21b-a3b": 21e9, "smallthinker-4b-a0.6b": 4e9}[name]
    assert abs(a.total_params / stated - 1) < 0.15, a.total_params


def test_grouped_kv_heads_and_head_dim_set_the_kv_cache():
    l8, l2 = _bytes("llama-3-8b"), _bytes("llama-2-7b")
    # 8 KV heads of 128 against 32: a quarter of the KV per token and layer
    assert l8.kv_cache(1000) * 4 == pytest.approx(l2.kv_cache(1000))
    phi = _bytes("phi-3.5-mini")
    assert phi.kv_cache(1) == pytest.approx(32 * 2 * 32 * 96 * KV_BYTES_PER_VALUE)


def test_qkv_bias_and_tied_embeddings():
    q = load_model("qwen2.5-3b").architecture
    assert q.qkv_bias and q.attention_bias_params_per_layer == (16 + 2 * 2) * 128
    b = _bytes("qwen2.5-3b")
    assert b.attention_per_layer() == pytest.approx(q.attention_params_per_layer * b.bpw + 2 * q.attention_bias_params_per_layer)
    # tied: the head is streamed every token but stored once (as the embedding)
    assert b.lm_head() > 0 and b.lm_head_storage() == 0
    assert _bytes("llama-3-8b").lm_head_storage() == _bytes("llama-3-8b").lm_head()


def test_sliding_window_layers_stop_growing_their_kv():
    b = _bytes("smallthinker-4b-a0.6b")
    a = b.arch
    per_layer_token = 2 * a.kv_heads * a.head_dim * KV_BYTES_PER_VALUE
    assert list(a.kv_window()[:4]) == [np.inf, 4096, 4096, 4096]
    # up to the window every layer grows; past it only the 8 global layers of 32 do
    assert b.kv_cache(4096) == pytest.approx(32 * 4096 * per_layer_token)
    assert b.kv_cache(8192) - b.kv_cache(4096) == pytest.approx(8 * 4096 * per_layer_token)
    reads = b.kv_per_token_layer(np.array([[100], [5000]]))
    assert reads.shape == (2, 32) and reads[0].max() == reads[0].min()
    assert reads[1, 0] == pytest.approx(5000 * per_layer_token) and reads[1, 1] == pytest.approx(4096 * per_layer_token)


@pytest.mark.parametrize("policy", ["dense", "llamacpp"])
def test_dense_model_without_trace_runs_dense(policy):
    r = simulate(model="qwen3-1.7b", policy=policy, ffn_offload=0.0, decode_tokens=4, fidelity="analytic")
    assert r.summary["decode_tok_s"] > 0 and r.summary["config"]["trace"] == {}


def test_sparse_engine_refuses_a_model_without_trace():
    p = subprocess.run([sys.executable, "-m", "pi2sim", "run", "--model", "llama-3.2-1b", "--policy", "powerinfer2", "--decode-tokens", "2", "--quiet"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert "sparsity.trace" in p.stderr and "dense engine" in p.stderr


@pytest.mark.parametrize("model,quant,published_mib", [
    ("llama-3.2-1b", "8da4w", 1083), ("llama-3.2-3b", "8da4w", 2435), ("llama-3.2-3b", "bf16", 6129),
])
def test_engine_formats_give_the_published_file_sizes(model, quant, published_mib):
    """ExecuTorch's .pte sizes (docs/sources.md §D): 8da4w stores 4-bit groups of 32 with
    FP16 scales, an 8-bit embedding and a separate 8-bit head; BF16 two bytes a weight. (SpinQuant's
    rotation matrices, not modelled, make the 8da4w files a few percent larger.)"""
    b = ModelBytes(load_model(model), get_format(quant))
    assert abs(b.total() / 2**20 / published_mib - 1) < 0.08


def test_engine_formats_by_name():
    from pi2sim.specs.quant import FORMATS

    assert {"8da4w", "bf16", "w4a16", "q4_0", "q4f16_1"} <= set(FORMATS)
    q = FORMATS["q4_0"]
    assert q.dram_bytes_per_weight() == pytest.approx(18 / 32)  # llama.cpp's 18-byte block of 32 weights
    assert FORMATS["8da4w"].embedding_bytes_per_weight() == 1.0 and FORMATS["bf16"].compute_dtype == "fp16"
    r = simulate(model="llama-3.2-1b", policy="dense", quant="8da4w", ffn_offload=0.0, decode_tokens=4, fidelity="analytic")
    assert r.summary["config"]["run"]["quant"] == "8da4w"
