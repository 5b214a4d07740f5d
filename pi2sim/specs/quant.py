"""Weight quantization: bytes per weight in DRAM and on flash, and the neuron-bundle layout.

Quantization is a run option (``--set quant=fp16``), not part of the model. INT4 is the default,
with the layout PowerInfer-2 describes (v3 §4.4): per matrix-neuron 2 KB of INT4 weights plus
0.5 KB of FP16 scale and offset (one of each per group of 32 weights), the Gate, Up and Down parts
of neuron i stored together as one bundle of 7.5 KB padded to 8 KB and read as two 4 KB reads
(Gate part, then Up/Down part). FP16 bundles are 24 KB and read in one request.

In DRAM, dense weights carry one FP16 scale per group (2 bytes per 32 weights): that is what
reproduces PowerInfer-2's 2.7 GB of FFN scales for TurboSparse-Mixtral-47B (v3 §7.2.3; the two
statements conflict, design doc §13 item 6, and the policy's ``scale_placement`` chooses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class QuantFormat:
    name: str
    weight_bits: int
    group: int  # weights per scale group (0: no groups)
    flash_meta_bytes_per_group: float  # scale (+ offset) bytes per group inside a flash bundle
    dram_scale_bytes_per_group: float  # scale bytes per group for weights held in DRAM
    compute_dtype: str  # selects CPU kernel rates: "int4", "fp16", or "i8mm" (INT4 matvec rates, int8-matmul GEMM: see Core.gemm_ops)
    split_reads: bool  # bundle parts are read as separate read-unit-sized requests
    embedding_bits: int | None = None  # the token embedding's bits (None: weight_bits, with the groups' scales)
    head_bits: int | None = None  # the LM head's bits (None: weight_bits, with the groups' scales)
    separate_head: bool = False  # the head is stored apart from a tied embedding (quantized its own way)
    engine: str = ""  # the engine whose format this is (descriptive)
    gguf: str | None = None  # a llama.cpp GGUF file type: its tensors' block types follow llama-quantize's rule (gguf_tensor_type)

    # ---- DRAM
    def dram_bytes_per_weight(self) -> float:
        """Bytes per weight of a dense tensor resident in DRAM (weights + scales)."""
        scales = self.dram_scale_bytes_per_group / self.group if self.group else 0.0
        return self.weight_bits / 8 + scales

    def embedding_bytes_per_weight(self) -> float:
        return self.dram_bytes_per_weight() if self.embedding_bits is None else self.embedding_bits / 8

    def head_bytes_per_weight(self) -> float:
        return self.dram_bytes_per_weight() if self.head_bits is None else self.head_bits / 8

    def weight_bytes(self, n_weights: float) -> float:
        """Weight bytes only (no scales)."""
        return n_weights * self.weight_bits / 8

    def scale_bytes(self, n_weights: float) -> float:
        return n_weights * self.dram_scale_bytes_per_group / self.group if self.group else 0.0

    # ---- flash layout
    def flash_matrix_neuron_bytes(self, hidden: int) -> float:
        """One matrix-neuron (a row of Gate or Up, a column of Down) as stored on flash."""
        meta = math.ceil(hidden / self.group) * self.flash_meta_bytes_per_group if self.group else 0.0
        return hidden * self.weight_bits / 8 + meta


INT4 = QuantFormat("int4", 4, 32, 4.0, 2.0, "int4", True)
INT8 = QuantFormat("int8", 8, 32, 4.0, 2.0, "int4", True)  # INT8 uses the INT4 kernel rates (assumption)
FP16 = QuantFormat("fp16", 16, 0, 0.0, 0.0, "fp16", False)
# The engines' own formats (docs/sources.md §D). A per-channel scale adds 2 bytes per
# row of thousands of weights, below 0.1%, and is left out.
# ExecuTorch's 8da4w: 4-bit groupwise weights (FP16 scale per group) with 8-bit dynamic activations;
# the embedding 8-bit and the output classifier 8-bit per channel, each its own tensor (ExecuTorch
# README). With 8-bit activations XNNPACK/KleidiAI run the prompt's matrix-matrix products as int8
# matrix multiplies (the "i8mm" kernel class); a token's matrix-vector products stream weights at
# the INT4 rates.
Q8DA4W = QuantFormat("8da4w", 4, 32, 2.0, 2.0, "i8mm", True, embedding_bits=8, head_bits=8, separate_head=True, engine="executorch")
Q8DA4W_G128 = QuantFormat(  # the same with groups of 128 (ExecuTorch's Llama-3-8B row, "-G 128")
    "8da4w-g128", 4, 128, 2.0, 2.0, "i8mm", True, embedding_bits=8, head_bits=8, separate_head=True, engine="executorch",
)
BF16 = QuantFormat("bf16", 16, 0, 0.0, 0.0, "fp16", False, engine="executorch")  # bfloat16: FP16's bytes and kernel class (assumption: same rate)
W4A16 = QuantFormat(  # QNN / Genie: 4-bit weights, 16-bit activations, per-channel scales
    "w4a16", 4, 0, 0.0, 0.0, "int4", True, head_bits=8, engine="genie",
)  # assumption: the "few layers at w8a16" (AI Hub) are the LM head; which ones is not published
# llama.cpp's GGUF file types (ggml/src/ggml-common.h for the blocks; src/llama-quant.cpp for which
# tensor gets which block type: gguf_tensor_type). Their layer weights are exact (bpw from the
# block sizes); the output tensor and the token embedding follow llama-quantize's rule.
Q4_0 = QuantFormat("q4_0", 4, 32, 2.0, 2.0, "int4", True, engine="llamacpp", gguf="q4_0")  # blocks of 32 weights + one FP16 scale (18 B, 4.5 bpw)
Q8_0 = QuantFormat("q8_0", 8, 32, 2.0, 2.0, "int8", True, engine="llamacpp", gguf="q8_0")  # 32 int8 + FP16 scale (34 B, 8.5 bpw)
Q6_K = QuantFormat("q6_k", 6, 256, 18.0, 18.0, "int4", True, engine="llamacpp", gguf="q6_k")  # 256 weights: 192 B quants + 16 int8 scales + FP16 d (210 B, 6.5625 bpw)
# Q4_K_M: Q4_K blocks (256 weights: 128 B quants + 12 B scales/mins + FP16 d, dmin = 144 B, 4.5 bpw) with
# attn_v and ffn_down in Q6_K on a third of the layers; the fields below are the Q4_K base, ModelBytes
# takes the exact mixture from gguf_layer_bytes
Q4_K_M = QuantFormat("q4_k_m", 4, 256, 16.0, 16.0, "int4", True, engine="llamacpp", gguf="q4_k_m")
Q4F16_1 = QuantFormat("q4f16_1", 4, 32, 2.0, 2.0, "int4", True, engine="mlc")  # MLC: 4-bit, FP16 scale per group of 32
FORMATS = {f.name: f for f in (INT4, INT8, FP16, Q8DA4W, Q8DA4W_G128, BF16, W4A16, Q4_0, Q8_0, Q4_K_M, Q6_K, Q4F16_1)}

# ---- GGUF block types and llama-quantize's tensor rule

# block type -> (weights per block, bytes per block): ggml/src/ggml-common.h (block_q4_0, block_q5_0,
# block_q8_0, block_q4_K, block_q6_K)
GGUF_BLOCKS = {"q4_0": (32, 18), "q5_0": (32, 22), "q8_0": (32, 34), "q4_k": (256, 144), "q6_k": (256, 210), "f32": (1, 4)}
# when a tensor's rows are not a whole number of 256-weight blocks, llama-quantize falls back
# (src/llama-quant.cpp tensor_type_fallback): Q4_K -> Q5_0, Q6_K -> Q8_0
_FALLBACK = {"q4_k": "q5_0", "q6_k": "q8_0"}
_BASE = {"q4_0": "q4_0", "q8_0": "q8_0", "q6_k": "q6_k", "q4_k_m": "q4_k"}


def gguf_block_bytes_per_weight(block: str) -> float:
    n, b = GGUF_BLOCKS[block]
    return b / n


def use_more_bits(i: int, n: int) -> bool:
    """llama-quant.cpp's ``use_more_bits(i_layer, n_layers)``: the first and last eighth of the
    layers and every third one between them get more bits in the _M mixtures."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def gguf_tensor_type(file_type: str, tensor: str, layer: int, n_layers: int, row_len: int, tied: bool = False) -> str:
    """The block type llama-quantize gives ``tensor`` (``output``, ``token_embd``, ``attn_q``,
    ``attn_k``, ``attn_v``, ``attn_output``, ``ffn_gate``, ``ffn_up``, ``ffn_down``) of a model
    quantized to ``file_type`` (src/llama-quant.cpp ``llama_tensor_get_type``, the same at b3000 and
    in 2026): the output tensor is Q6_K unless the file is Q8_0; a tied token embedding is the output
    tensor and takes its type, an untied one the base type; Q4_K_M gives attn_v and ffn_down Q6_K on
    the layers :func:`use_more_bits` names; a row that is not whole 256-weight blocks falls back."""
    base = _BASE[file_type]
    if tensor == "output" or (tensor == "token_embd" and tied):
        t = "q8_0" if base == "q8_0" else "q6_k"
    elif tensor == "token_embd":
        t = base
    elif file_type == "q4_k_m" and tensor in ("attn_v", "ffn_down") and use_more_bits(layer, n_layers):
        t = "q6_k"
    else:
        t = base
    if t in _FALLBACK and row_len % 256:
        t = _FALLBACK[t]
    return t


@dataclass(frozen=True)
class GgufLayerBytes:
    """Bytes of a GGUF model's weight matrices by block type: ``attention[l]`` and ``ffn[l]`` map a
    block type to the bytes of that layer's tensors of that type (an MoE layer's FFN: one expert);
    the output tensor and the token embedding with their types."""

    attention: list[dict[str, float]]
    ffn: list[dict[str, float]]
    output: tuple[str, float]
    token_embd: tuple[str, float]


def gguf_layer_bytes(arch, q: QuantFormat) -> GgufLayerBytes:
    """Every weight matrix of ``arch`` under the GGUF file type ``q`` (:func:`gguf_tensor_type`)."""
    L, h = arch.layers, arch.hidden
    q_out, kv_out = arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    attn_t = {"attn_q": (h, q_out), "attn_k": (h, kv_out), "attn_v": (h, kv_out), "attn_output": (q_out, h)}  # (row length, rows)
    ffn_t = {"ffn_up": (h, arch.ffn_neurons), "ffn_down": (arch.ffn_neurons, h)}
    if arch.gated_ffn:
        ffn_t["ffn_gate"] = (h, arch.ffn_neurons)
    attn, ffn = [], []
    for layer in range(L):
        for table, out in ((attn_t, attn), (ffn_t, ffn)):
            d: dict[str, float] = {}
            for name, (row, rows) in table.items():
                t = gguf_tensor_type(q.gguf, name, layer, L, row)
                d[t] = d.get(t, 0.0) + row * rows * gguf_block_bytes_per_weight(t)
            out.append(d)
    t_out = gguf_tensor_type(q.gguf, "output", 0, L, h)
    t_emb = gguf_tensor_type(q.gguf, "token_embd", 0, L, h, tied=arch.tied_embeddings)
    n = arch.vocab * h
    return GgufLayerBytes(attn, ffn, (t_out, n * gguf_block_bytes_per_weight(t_out)), (t_emb, n * gguf_block_bytes_per_weight(t_emb)))


@dataclass(frozen=True)
class BundleLayout:
    """How one FFN neuron's weights sit on flash and how a miss becomes read requests.

    With ``bundled`` the Gate/Up/Down parts of a neuron are contiguous (one bundle padded to the
    read unit); without, each matrix-neuron lives in its own matrix region and is read separately.
    ``gate_reads`` / ``ud_reads`` are request sizes in bytes for the two phases of a two-phase load;
    ``whole_reads`` the requests of a one-phase load.
    """

    bundled: bool
    matrices: int  # 3 (gate/up/down) or 2 (up/down)
    matrix_neuron_bytes: float  # flash bytes of one matrix-neuron (weights + meta)
    bundle_bytes: float  # flash bytes of one neuron (padded)
    gate_reads: tuple[float, ...]  # requests of the Gate part (two-phase load, phase 1)
    ud_reads: tuple[float, ...]  # requests of the Up/Down part (phase 2)
    whole_reads: tuple[float, ...]  # requests when the whole neuron is read at once

    @property
    def region_bytes_per_neuron(self) -> float:
        """Address space one neuron occupies on flash (for the UFS span model)."""
        return self.bundle_bytes


def _pad(n: float, unit: float) -> float:
    return math.ceil(n / unit) * unit


def _split(n: float, unit: float, split: bool) -> tuple[float, ...]:
    n = _pad(n, unit)
    if n <= 0:
        return ()
    if not split:
        return (n,)
    return tuple([unit] * int(round(n / unit)))


def bundle_layout(q: QuantFormat, hidden: int, matrices: int, bundled: bool, read_unit: float) -> BundleLayout:
    mn = q.flash_matrix_neuron_bytes(hidden)
    if bundled:
        total = _pad(matrices * mn, read_unit)
        if matrices == 3:
            gate = _pad(mn, read_unit)
            gate_reads = _split(gate, read_unit, q.split_reads)
            ud_reads = _split(total - gate, read_unit, q.split_reads)
        else:  # up/down only: no gate phase; the up part plays its role
            gate = _pad(mn, read_unit)
            gate_reads = _split(gate, read_unit, q.split_reads)
            ud_reads = _split(total - gate, read_unit, q.split_reads)
        whole = _split(total, read_unit, q.split_reads)
        return BundleLayout(True, matrices, mn, total, gate_reads, ud_reads, whole)
    per = _pad(mn, read_unit)
    one = _split(per, read_unit, q.split_reads)
    gate_reads = one
    ud_reads = one * (matrices - 1)
    return BundleLayout(False, matrices, mn, per * matrices, gate_reads, ud_reads, one * matrices)


def get_format(name: str) -> QuantFormat:
    from ..errors import InputError

    if name not in FORMATS:
        raise InputError(None, "quant", "one of " + ", ".join(FORMATS), name)
    return FORMATS[name]
