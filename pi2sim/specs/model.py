"""Model specs (``models/<name>.yaml``): architecture shape and where the activation trace comes from.

Bytes are not part of the model: quantization is a run option (:mod:`pi2sim.specs.quant`), so the
same model YAML serves INT4 and FP16 runs. Every number in a model YAML cites its source (the
public Hugging Face config, a paper) in a comment; ``tests/test_provenance.py`` enforces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .. import resources, schema, yamlio
from ..errors import InputError
import numpy as np

from ..schema import spec_field

Activation = Literal["relu", "drelu", "fatrelu", "silu", "gelu"]
RELU_FAMILY = ("relu", "drelu", "fatrelu")


@dataclass(frozen=True, kw_only=True)
class Architecture:
    layers: int = spec_field(lo=1, hi=512, help="decoder blocks")
    hidden: int = spec_field(lo=16, hi=65536, help="model width")
    ffn_neurons: int = spec_field(lo=1, hi=1_000_000, help="FFN intermediate size (per expert for MoE)")
    heads: int = spec_field(lo=1, hi=1024, help="query heads")
    kv_heads: int = spec_field(lo=1, hi=1024, help="key/value heads (GQA)")
    head_dim: int = spec_field(lo=8, hi=1024, help="dimension per head")
    vocab: int = spec_field(lo=2, hi=2_000_000, help="vocabulary size")
    experts: int = spec_field(default=1, lo=1, hi=1024, help="FFN experts per layer (1 for dense)")
    top_k: int = spec_field(default=1, lo=1, hi=64, help="experts routed per token")
    activation: Activation = spec_field(help="FFN activation function")
    gated_ffn: bool = spec_field(default=True, help="gate/up/down FFN (SwiGLU-style) rather than up/down")
    tied_embeddings: bool = spec_field(default=False, help="LM head shares the token-embedding matrix")
    qkv_bias: bool = spec_field(default=False, help="the Q, K and V projections have biases (Qwen2), kept at 16 bits")
    sliding_window: int | None = spec_field(
        default=None, lo=1, hi=100_000_000, help="tokens a sliding-window attention layer keeps and attends to (none: every layer sees the whole context)"
    )
    global_attention_every: int = spec_field(
        default=1, lo=1, hi=512, help="with sliding_window: layers 0, n, 2n, ... attend to the whole context, the others within the window"
    )

    def validate(self, source) -> None:
        if self.heads % self.kv_heads:
            raise InputError(source, "kv_heads", f"a divisor of heads ({self.heads})", self.kv_heads)
        if self.top_k > self.experts:
            raise InputError(source, "top_k", f"at most experts ({self.experts})", self.top_k)
        if self.experts == 1 and self.top_k != 1:
            raise InputError(source, "top_k", "1 for a dense model (experts: 1)", self.top_k)
        if self.sliding_window is None and self.global_attention_every != 1:
            raise InputError(source, "global_attention_every", "1 unless sliding_window is set", self.global_attention_every)

    def kv_window(self) -> np.ndarray:
        """[layers]: the most KV entries each layer keeps (inf: the whole context)."""
        w = np.full(self.layers, np.inf)
        if self.sliding_window is not None:
            local = np.arange(self.layers) % self.global_attention_every != 0
            w[local] = self.sliding_window
        return w

    @property
    def attention_bias_params_per_layer(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def matrices_per_neuron(self) -> int:
        """Weight vectors per FFN neuron: gate, up, down (3) or up, down (2)."""
        return 3 if self.gated_ffn else 2

    # parameter counts (weights only)
    @property
    def attention_params_per_layer(self) -> int:
        q = self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_heads * self.head_dim
        o = self.heads * self.head_dim * self.hidden
        return q + kv + o

    @property
    def ffn_params_per_layer(self) -> int:
        return self.experts * self.ffn_neurons * self.matrices_per_neuron * self.hidden

    @property
    def router_params_per_layer(self) -> int:
        return self.hidden * self.experts if self.is_moe else 0

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    def prefill_ops_per_token(self, prompt_tokens: int) -> float:
        """Operations per prompt token of a dense prefill (multiply-add = 2): every weight of
        attention and of the routed experts once, plus the causal attention scores (QK^T and AV)
        averaged over the prompt. The LM head runs for the last token only and is not included."""
        weights = self.attention_params_per_layer + self.top_k * self.ffn_neurons * self.matrices_per_neuron * self.hidden
        p = max(int(prompt_tokens), 1)
        scores = 2 * 2 * self.heads * self.head_dim * (p * (p + 1) / 2) / p
        return float(self.layers * (2 * weights + scores))

    def prefill_ops_attending(self, attended: int) -> float:
        """Operations per prompt token when every prompt position attends to ``attended`` KV
        positions (a static graph over a fixed context), the weights' work as above."""
        weights = self.attention_params_per_layer + self.top_k * self.ffn_neurons * self.matrices_per_neuron * self.hidden
        scores = 2 * 2 * self.heads * self.head_dim * float(attended)
        return float(self.layers * (2 * weights + scores))

    @property
    def total_params(self) -> int:
        per_layer = self.attention_params_per_layer + self.attention_bias_params_per_layer + self.ffn_params_per_layer + self.router_params_per_layer + 2 * self.hidden
        return self.layers * per_layer + self.embedding_params + self.lm_head_params + self.hidden


@dataclass(frozen=True, kw_only=True)
class SparsitySource:
    trace: str = spec_field(
        help="'synthetic' (generated from traces/profiles/<profile>.yaml), a bundled trace name / path, or 'none' (a dense model no sparse engine runs)"
    )
    profile: str | None = spec_field(default=None, help="synthetic profile name (default: the model name)")
    level: float | None = spec_field(default=None, gt=0.0, hi=0.999, help="sparsity level to replay from a magnitude trace")


@dataclass(frozen=True, kw_only=True)
class Predictor:
    bytes_per_block: float = spec_field(
        unit="bytes", lo=0.0, hi=1e9, help="activation-predictor weights per FFN block (per expert for MoE)"
    )


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    name: str = spec_field(help="model name (the file stem)")
    description: str = spec_field(default="", help="free text")
    shape_source: str = spec_field(help="where the shape comes from (public config)")
    architecture: Architecture = spec_field(help="shape")
    sparsity: SparsitySource = spec_field(help="where activation traces come from")
    predictor: Predictor = spec_field(help="activation predictors (decoding only)")
    path: str = spec_field(default="", help="(set by the loader)")

    def validate(self, source) -> None:
        stem = Path(str(source)).stem if source else self.name
        if source and stem != self.name:
            raise InputError(source, "name", f"the file name without .yaml ({stem!r})", self.name)
        # a predictor is a small low-rank MLP: between 0.05% and 50% of the FP16 weights of the
        # FFN block it predicts (published ones are ~3%); outside that range is a unit slip
        a = self.architecture
        block_fp16 = 2.0 * a.hidden * a.ffn_neurons * a.matrices_per_neuron
        p = self.predictor.bytes_per_block
        if p and not 5e-4 * block_fp16 <= p <= 0.5 * block_fp16:
            from ..units import format_quantity

            raise InputError(source, "predictor.bytes_per_block",
                             f"0 or between {format_quantity(5e-4 * block_fp16, 'bytes')} and {format_quantity(0.5 * block_fp16, 'bytes')} "
                             f"(0.05% to 50% of one FP16 FFN block of this model)", p)


def load_model(name_or_path: str | Path, overrides: dict | None = None) -> ModelSpec:
    """Load a bundled model by name (``turbosparse-mistral-7b``) or a model YAML by path;
    ``overrides`` as in :func:`pi2sim.specs.device.load_device`."""
    path = resources.resolve("models", name_or_path, what="--model")
    data = yamlio.load(path)
    if not isinstance(data, dict):
        raise InputError(path, None, "a mapping with name, architecture, sparsity, predictor")
    if overrides:
        from ..config import override_yaml

        data = override_yaml(data, overrides, f"{path} (--set model.*)")
    if "path" in data:  # a field of the spec, filled by this loader: not something a file may set
        raise InputError(path, "path", "unknown key (a model file's location is where it is, not a setting)")
    spec = schema.build(ModelSpec, data, path)
    from dataclasses import replace

    return replace(spec, path=str(path))


def model_names() -> list[str]:
    return resources.bundled_names("models")
