"""Record activation traces by running a real decoder on a prompt set.

Two engines share one conversation loop (:func:`record`):

* ``numpy``: :class:`~pi2sim.trace.gguf_llama.GGUFLlama` on a GGUF file (SmolLM2 by default);
* ``hf``: any local Hugging Face checkpoint through transformers + torch forward pre-hooks on each
  ``down_proj`` (see :class:`HFEngine`).

A prompt set (YAML) lists conversations; each has a task kind (dialogue, code, math, role-play),
a decoding mode (greedy or sampled with temperature and seed) and user turns. Every user turn is
one *sequence* in the trace: its prompt tokens (phase 0: the chat-template wrapping of the turn,
evaluated in one prefill call) followed by the tokens the model generates (phase 1, each fed back
one at a time). Turns of a conversation share the KV cache, as in a real chat.

"Active" is defined per the model family (docs/sources.md §E):

* ``zero``: the ReLU test, ``h != 0`` (ReLU / dReLU / FATReLU models);
* ``magnitude``: per layer, thresholds at the s-quantiles of ``|h|`` pooled over the recorded
  decode tokens, for each requested sparsity s; the trace stores how many thresholds each neuron
  exceeds, so one file replays every level.

Recording is deterministic: greedy decoding is argmax, sampling draws from
``numpy.random.default_rng(seed)``. With ``dtype=float64`` the results do not depend on BLAS
summation order to any precision that matters, so the same command regenerates the same file
bit for bit (the bundled trace is made that way; see traces/README.md).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from .. import schema, yamlio
from ..errors import InputError
from ..schema import spec_field
from .format import PHASE_DECODE, PHASE_PROMPT, ActivationLevel, TraceMeta, TraceWriter

# Bump when anything that changes recorded bits changes (decoding, thresholds, codes, layout).
RECORDER_VERSION = 1


# ----------------------------------------------------------------------------- prompt sets


@dataclass(frozen=True, kw_only=True)
class Decoding:
    mode: Literal["greedy", "sampled"] = spec_field(default="greedy", help="greedy (argmax) or sampled")
    temperature: float = spec_field(default=0.7, gt=0.0, hi=5.0, help="sampling temperature")
    seed: int = spec_field(default=0, lo=0, help="sampling seed (numpy default_rng)")


@dataclass(frozen=True, kw_only=True)
class Conversation:
    id: str = spec_field(help="conversation name")
    task: Literal["dialogue", "code", "math", "role-play"] = spec_field(help="task kind (the paper's workloads)")
    turns: list[str] = spec_field(help="user messages, in order")
    decoding: Decoding = spec_field(default_factory=Decoding)
    system: str | None = spec_field(default=None, help="system message (overrides the set's)")

    def validate(self, source) -> None:
        if not self.turns:
            raise InputError(source, "turns", "at least one user turn")


@dataclass(frozen=True, kw_only=True)
class PromptSet:
    name: str = spec_field(help="name of the prompt set")
    system: str | None = spec_field(default=None, help="default system message (none: the chat starts with the user turn)")
    max_new_tokens: int = spec_field(default=100, lo=1, hi=4096, help="cap on generated tokens per turn")
    conversations: list[Conversation] = spec_field(help="the conversations")

    def validate(self, source) -> None:
        if not self.conversations:
            raise InputError(source, "conversations", "at least one conversation")
        ids = [c.id for c in self.conversations]
        if len(set(ids)) != len(ids):
            raise InputError(source, "conversations", "unique conversation ids")


def load_prompt_set(path: str | Path) -> PromptSet:
    data = yamlio.load(path)
    if not isinstance(data, dict):
        raise InputError(path, None, "a mapping with name, conversations")
    return schema.build(PromptSet, data, path)


# ----------------------------------------------------------------------------- engines


class Engine(Protocol):
    n_layers: int
    n_ff: int
    eos_ids: tuple[int, ...]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def new_cache(self) -> object: ...

    def forward(self, ids: np.ndarray, cache: object) -> tuple[np.ndarray, list[np.ndarray]]: ...

    def describe(self) -> dict: ...


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class NumpyEngine:
    """GGUF llama model on numpy (see :mod:`pi2sim.trace.gguf_llama`)."""

    def __init__(self, path: str | Path | None = None, dtype: str = "float64"):
        from .gguf_llama import GGUFLlama, smollm2_gguf_path

        self.path = Path(path) if path else smollm2_gguf_path()
        if not self.path.is_file():
            raise InputError(self.path, None, "cannot read model: the file does not exist")
        self.model = GGUFLlama(self.path, dtype)
        self.tokenizer = self.model.tokenizer()
        self.n_layers = self.model.n_layers
        self.n_ff = self.model.n_ff
        im_end = self.tokenizer.token_to_id("<|im_end|>")
        self.eos_ids = tuple(sorted({self.model.eos_id} | ({im_end} if im_end is not None else set())))
        self.dtype = dtype

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def new_cache(self):
        return self.model.new_cache()

    def forward(self, ids, cache):
        return self.model.forward(ids, cache)

    def describe(self) -> dict:
        return {
            "engine": "numpy",
            "model_file": self.path.name,
            "model_file_sha256": _sha256_file(self.path),
            "dtype": self.dtype,
            "architecture": "llama",
        }


class HFEngine:
    """Any local Hugging Face causal LM, FFN activations captured by forward pre-hooks.

    The hook on every ``mlp.down_proj`` sees ``act(gate) * up``, the neuron activation vector.
    ``path`` is a checkpoint directory, or a GGUF file (loaded through transformers' GGUF support).
    """

    def __init__(self, path: str | Path | None = None, dtype: str = "float32"):
        try:
            import torch
            import transformers
        except ImportError:
            raise InputError(None, "engine", "torch and transformers for --engine hf; install with: pip install 'pi2sim[hf]'") from None
        from .gguf_llama import smollm2_gguf_path

        self.torch = torch
        path = Path(path) if path else smollm2_gguf_path()
        if not path.exists():
            raise InputError(path, None, "cannot read model: it does not exist")
        kwargs = {}
        if path.is_file():
            kwargs["gguf_file"] = path.name
            where = str(path.parent)
        else:
            where = str(path)
        self.path = path
        tdtype = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[dtype]
        transformers.logging.set_verbosity_error()
        self.tok = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(where, dtype=tdtype, **kwargs)
        self.model.eval()
        downs = [(name, mod) for name, mod in self.model.named_modules() if name.endswith("mlp.down_proj")]
        if not downs:
            raise InputError(path, None, "a model whose FFN blocks have an 'mlp.down_proj' module (llama-like dense models)")
        self.n_layers = len(downs)
        self.n_ff = int(downs[0][1].in_features)
        self._captured: dict[int, np.ndarray] = {}
        for i, (_, mod) in enumerate(downs):
            mod.register_forward_pre_hook(self._hook(i))
        eos = self.tok.eos_token_id
        im_end = self.tok.convert_tokens_to_ids("<|im_end|>")
        ids = {eos} if isinstance(eos, int) else set(eos or [])
        if isinstance(im_end, int) and im_end != self.tok.unk_token_id:
            ids.add(im_end)
        self.eos_ids = tuple(sorted(ids))
        self.dtype = dtype

    def _hook(self, i: int) -> Callable:
        def hook(_mod, inputs):
            self._captured[i] = inputs[0][0].detach().to(self.torch.float64).numpy()

        return hook

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def new_cache(self):
        import transformers

        return {"past": transformers.DynamicCache(), "length": 0}

    def forward(self, ids, cache):
        torch = self.torch
        ids = torch.tensor([list(map(int, ids))])
        n = ids.shape[1]
        pos = torch.arange(cache["length"], cache["length"] + n)[None, :]
        with torch.no_grad():
            out = self.model(input_ids=ids, past_key_values=cache["past"], position_ids=pos, use_cache=True)
        cache["past"] = out.past_key_values
        cache["length"] += n
        acts = [self._captured[i] for i in range(self.n_layers)]
        return out.logits[0].to(torch.float64).numpy(), acts

    def describe(self) -> dict:
        d = {"engine": "hf", "model_path": self.path.name, "dtype": self.dtype}
        if self.path.is_file():
            d["model_file_sha256"] = _sha256_file(self.path)
        return d


def make_engine(engine: str, model_path: str | Path | None, dtype: str) -> Engine:
    if engine == "numpy":
        return NumpyEngine(model_path, dtype)
    if engine == "hf":
        return HFEngine(model_path, dtype)
    raise InputError(None, "--engine", "numpy or hf", engine)


# ----------------------------------------------------------------------------- recording


@dataclass
class RawRecording:
    """Everything one recording run produced, before quantization into codes."""

    token_id: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    phase: list[int] = field(default_factory=list)
    acts: list[np.ndarray] = field(default_factory=list)  # per token: [n_layers, n_ff] float32 |h| or h
    sequences: list[dict] = field(default_factory=list)


def _chat_prefix(system: str | None, first_turn: bool) -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n" if first_turn and system else ""


def _sample(logits: np.ndarray, decoding: Decoding, rng: np.random.Generator) -> int:
    if decoding.mode == "greedy":
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / decoding.temperature
    z -= z.max()
    p = np.exp(z)
    c = np.cumsum(p)
    u = rng.random() * c[-1]
    return int(min(np.searchsorted(c, u, side="right"), len(c) - 1))


def run_conversations(
    engine: Engine, prompts: PromptSet, keep: Callable[[np.ndarray], np.ndarray], progress: bool = True, max_new_tokens: int | None = None
) -> RawRecording:
    """Run every conversation; ``keep`` maps the [T, L, N] activations to what is stored."""
    rec = RawRecording()
    cap = max_new_tokens or prompts.max_new_tokens
    t0 = time.time()
    for conv in prompts.conversations:
        cache = engine.new_cache()
        rng = np.random.default_rng(conv.decoding.seed)
        system = conv.system or prompts.system
        closing = ""  # tokens that close the previous assistant turn
        for ti, user in enumerate(conv.turns):
            seq_index = len(rec.sequences)
            text = closing + _chat_prefix(system, ti == 0) + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
            ids = engine.encode(text)
            logits, acts = engine.forward(np.array(ids), cache)
            stack = keep(np.stack(acts, axis=1))  # [T, L, N]
            for j, tok in enumerate(ids):
                rec.token_id.append(int(tok))
                rec.seq.append(seq_index)
                rec.phase.append(PHASE_PROMPT)
                rec.acts.append(stack[j])
            nxt = _sample(logits[-1], conv.decoding, rng)
            generated: list[int] = []
            while nxt not in engine.eos_ids and len(generated) < cap:
                generated.append(nxt)
                logits, acts = engine.forward(np.array([nxt]), cache)
                rec.token_id.append(nxt)
                rec.seq.append(seq_index)
                rec.phase.append(PHASE_DECODE)
                rec.acts.append(keep(np.stack(acts, axis=1))[0])
                nxt = _sample(logits[-1], conv.decoding, rng)
            stopped = "eos" if nxt in engine.eos_ids else "max_new_tokens"
            # Close the turn the way the chat template does; an EOS sampled but not fed is written here.
            closing = "<|im_end|>\n"
            rec.sequences.append(
                {
                    "index": seq_index,
                    "conversation": conv.id,
                    "turn": ti,
                    "task": conv.task,
                    "decoding": schema.to_dict(conv.decoding) if conv.decoding.mode == "sampled" else {"mode": "greedy"},
                    "n_prompt": len(ids),
                    "n_decode": len(generated),
                    "stopped": stopped,
                    "user": user,
                    "reply": engine.decode(generated),
                }
            )
            if progress:
                n_dec = sum(s["n_decode"] for s in rec.sequences)
                print(
                    f"\r[record] {conv.id} turn {ti + 1}/{len(conv.turns)}: {len(rec.token_id)} tokens ({n_dec} decode), "
                    f"{time.time() - t0:.0f} s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    if progress:
        print(file=sys.stderr)
    return rec


def magnitude_codes(mags: np.ndarray, phase: np.ndarray, sparsities: tuple[float, ...]) -> tuple[np.ndarray, list[list[float]]]:
    """Codes (number of thresholds exceeded) and per-layer thresholds.

    ``mags`` is [T, L, N] of ``|h|``. Thresholds per layer are the s-quantiles of ``|h|`` pooled
    over the decode tokens of that layer (the prompt is coded against the decode thresholds).
    """
    decode = mags[phase == PHASE_DECODE]
    if len(decode) == 0:
        raise InputError(None, "prompts", "at least one generated (decode) token to set thresholds")
    thresholds = []
    codes = np.zeros(mags.shape, np.uint8)
    for s in sorted(sparsities):
        thr = np.quantile(decode, s, axis=(0, 2))  # [L]
        thresholds.append([float(x) for x in thr])
        codes += (mags > thr[None, :, None]).astype(np.uint8)
    return codes, thresholds


def record(
    out: str | Path,
    engine: Engine,
    prompts: PromptSet,
    prompts_path: str | Path,
    model_name: str,
    activation: Literal["magnitude", "zero"] = "magnitude",
    sparsities: tuple[float, ...] = (0.5, 0.7, 0.9),
    codec: str = "lzma",
    progress: bool = True,
    command: str | None = None,
    max_new_tokens: int | None = None,
) -> TraceMeta:
    """Record a trace to ``out`` and return its metadata."""
    if activation == "magnitude":
        if not sparsities or any(not 0.0 < s < 1.0 for s in sparsities) or len(set(sparsities)) != len(sparsities):
            raise InputError(None, "--levels", "distinct sparsity levels strictly between 0 and 1", sparsities)
        if len(sparsities) > 15:
            raise InputError(None, "--levels", "at most 15 levels", len(sparsities))
        raw = run_conversations(engine, prompts, lambda a: np.abs(a).astype(np.float32), progress, max_new_tokens)
    else:
        raw = run_conversations(engine, prompts, lambda a: (a != 0).astype(np.uint8), progress, max_new_tokens)
    phase = np.asarray(raw.phase, np.uint8)
    stacked = np.stack(raw.acts)  # [T, L, N]
    raw.acts.clear()
    if activation == "magnitude":
        codes, thresholds = magnitude_codes(stacked, phase, sparsities)
        levels = tuple(
            ActivationLevel(name=f"s{round(s * 100)}", sparsity=float(s), thresholds=tuple(thr))
            for s, thr in zip(sorted(sparsities), thresholds)
        )
    else:
        codes = stacked
        levels = (ActivationLevel(name="nonzero"),)
    del stacked
    provenance = {
        "kind": "recorded",
        "recorder_version": RECORDER_VERSION,
        "source_model": engine.describe(),
        "prompt_set": {"name": prompts.name, "file": Path(prompts_path).name, "sha256": _sha256_file(Path(prompts_path))},
        "activation_definition": (
            "|SiLU(x W_gate) * (x W_up)| > per-layer s-quantile of |h| over decode tokens"
            if activation == "magnitude"
            else "act(gate) * up != 0 (ReLU-family zero test)"
        ),
        "command": command,
    }
    meta = TraceMeta(
        model=model_name,
        n_layers=engine.n_layers,
        n_neurons=engine.n_ff,
        n_experts=1,
        top_k=1,
        activation_kind=activation,
        levels=levels,
        sequences=tuple(raw.sequences),
        provenance=provenance,
        codec=codec,
    )
    with TraceWriter(out, meta, chunk_tokens=64) as w:
        n = len(raw.token_id)
        token_id = np.asarray(raw.token_id, np.int32)
        seq = np.asarray(raw.seq, np.int32)
        for s in range(0, n, 64):
            e = min(n, s + 64)
            w.append(token_id[s:e], seq[s:e], phase[s:e], codes[s:e, :, None, :])
    return w.meta
