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
# The engines' own formats (external-measurements.md §1). A per-channel scale adds 2 bytes per
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
Q4_0 = QuantFormat("q4_0", 4, 32, 2.0, 2.0, "int4", True, engine="llamacpp")  # llama.cpp: blocks of 32 weights + one FP16 scale (18 B)
Q4F16_1 = QuantFormat("q4f16_1", 4, 32, 2.0, 2.0, "int4", True, engine="mlc")  # MLC: 4-bit, FP16 scale per group of 32
FORMATS = {f.name: f for f in (INT4, INT8, FP16, Q8DA4W, Q8DA4W_G128, BF16, W4A16, Q4_0, Q4F16_1)}


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
