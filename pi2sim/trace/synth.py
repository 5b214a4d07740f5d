"""Synthetic activation traces for models that cannot run here, calibrated to published statistics.

The generator (``GENERATOR_VERSION`` below) is a Gaussian copula over time:

* **Frequencies.** In layer ``l`` neuron ``i`` fires with probability ``f_i = Phi(mu_l + sigma_l q_i)``
  where ``q_i`` are evenly spaced standard-normal quantiles (shuffled per layer and expert by the
  seed). ``sigma_l`` sets the hot-neuron skew and is solved per layer so the profile's hot@80
  holds; ``mu_l`` follows from the layer's target sparsity (``mean f = Phi(mu / sqrt(1 + sigma^2))``).
* **Time.** Each neuron carries a latent ``z_i(t)``, a stationary AR(1) process with lag-one
  correlation ``rho``; a shared intensity factor ``h_l(t) = sqrt(gamma) G(t) + sqrt(1 - gamma) g_l(t)``
  (G global, g_l per layer, same dynamics) adds the token-to-token variation of how many neurons
  fire, partly common to all layers as in real traces. The neuron is active when
  ``sqrt(1 - beta) z_i + sqrt(beta) h_l > -(mu_l + sigma_l q_i)``, so its marginal rate is ``f_i``.
  ``beta`` is solved for the profile's coefficient of variation of active neurons per token and
  layer, ``gamma`` is the profile's correlation of those counts between layers, and ``rho`` is
  solved for its windowed reuse (share of a token's active set found in the previous k tokens).
* **Innovations.** The latents' per-token innovations are counter-based (generator 5,
  :mod:`pi2sim.trace.synth_kernel`): a pure function of the seed and (token, layer, routed
  slot, neuron), so the first N tokens of any longer trace are the N-token trace, and a cached
  trace is extended from its saved state instead of regenerated. The per-token intensity and
  the routing come from numpy's generator, whose state is saved with the trace.
* **Levels.** Magnitude profiles (SiLU models) get one threshold per replay level on the same
  latent, so the active sets of 50/70/90% sparsity nest exactly as thresholded magnitudes do.
* **Co-activation.** Apart from the shared factor, neurons are independent: PowerInfer-2 v3 §4.2
  reports co-activation below 20% once hot neurons are removed.
* **MoE routing** (TurboSparse-Mixtral). Per layer a Markov chain over expert pairs with uniform
  marginals: the first choice repeats with probability ``a + (1 - a)/E``; when it is new, the second
  choice reuses one of the previous pair with probability ``q``. ``a`` and ``q`` are solved in
  closed form from the Mixtral paper's Table 5 repetition rates (first choice; any overlap of the
  pair), interpolated between the published layers. Inside an expert each neuron follows the
  process above in *token* time: an expert routed again after d tokens finds its latent moved d
  AR(1) steps. What a neuron responds to is the token's hidden state, and the hidden states of
  tokens d apart are as alike whether or not the router picked this expert in between; so the
  reuse target holds along the token stream, and an expert's own stream of routed tokens
  (`trace stats`: expert_window_k) sees less of it. (Generator 3 advanced an expert's latent
  once per routing, as if its pattern paused while it was not routed: small caches then hit far
  more than the phone's memory curve allows, docs/sources.md §C T14.)

Why not rank-remap the real SmolLM2 trace (docs/sources.md §E)? The bundled trace keeps three levels,
not magnitudes, so per-neuron frequencies cannot be set freely; and tiling 1,536 real neurons onto
14,336 duplicates streams, which inflates co-activation far above what PowerInfer-2 reports.
The real trace is used directly as the SiLU workload (``smollm2-135m``) instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .. import resources, schema, yamlio
from ..errors import InputError
from ..schema import spec_field
from .format import PHASE_DECODE, PHASE_PROMPT, ActivationLevel, TraceMeta, TraceWriter

GENERATOR_VERSION = 5  # 5: counter-based innovations (prefix-stable, compiled); 4: MoE experts' latents follow the token stream; 3: neuron-to-frequency assignment fixed per model


# ----------------------------------------------------------------------------- normal helpers
# numpy only (scipy is not a dependency)


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, vectorised (Numerical Recipes erfcc; relative error < 1.2e-7)."""
    x = np.asarray(x, np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (
        1.00002368
        + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))
    )
    r = t * np.exp(poly)
    return np.where(x >= 0, r, 2.0 - r)


def _phi_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF."""
    return 0.5 * _erfc(-np.asarray(x, np.float64) / math.sqrt(2.0))


def _phi_inv(p: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation + one Newton step)."""
    p = np.asarray(p, np.float64)
    a = [-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00]
    b = [-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01, -1.328068155288572e01]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00]
    lo, hi = 0.02425, 1 - 0.02425
    x = np.empty_like(p)
    m = p < lo
    q = np.sqrt(-2 * np.log(p[m]))
    x[m] = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    m2 = (p >= lo) & (p <= hi)
    q = p[m2] - 0.5
    r = q * q
    x[m2] = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1
    )
    m3 = p > hi
    q = np.sqrt(-2 * np.log(1 - p[m3]))
    x[m3] = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    e = _phi_cdf(x) - p  # one Newton refinement
    x = x - e * math.sqrt(2 * math.pi) * np.exp(x * x / 2)
    return x


def _quantiles(n: int) -> np.ndarray:
    return _phi_inv((np.arange(n) + 0.5) / n)


def dead_count(n: int, live_share: float) -> int:
    """Neurons of one FFN that never fire when only ``live_share`` of them are live."""
    return int(round(n * (1.0 - live_share)))


def rank_quantiles(n: int, live_share: float = 1.0) -> np.ndarray:
    """Quantile of each frequency rank, ascending: the ``dead_count`` lowest ranks get -inf (they
    never fire), the live ones the evenly spaced quantiles of the live population."""
    d = dead_count(n, live_share)
    if d == 0:
        return _quantiles(n)
    return np.concatenate([np.full(d, -np.inf), _quantiles(n - d)])


def thresholds_of(mu, sigma, q: np.ndarray) -> np.ndarray:
    """Activation thresholds -(mu + sigma q), +inf where q is -inf (a dead neuron)."""
    with np.errstate(invalid="ignore"):
        tau = -(mu + sigma * np.where(np.isfinite(q), q, 0.0))
    return np.where(np.isfinite(q), tau, np.inf)


def _bisect(fn, lo: float, hi: float, target: float, increasing: bool, iters: int = 40) -> float:
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        v = fn(mid)
        if (v < target) == increasing:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True, kw_only=True)
class SparsityProfile:
    mean: float | None = spec_field(default=None, gt=0.0, hi=0.999, help="mean FFN sparsity per layer (zero kind)")
    layer_min: float | None = spec_field(default=None, gt=0.0, hi=0.999, help="lowest per-layer sparsity")
    layer_max: float | None = spec_field(default=None, gt=0.0, hi=0.999, help="highest per-layer sparsity")
    shape: Literal["flat", "u", "hump", "ramp_up", "ramp_down"] = spec_field(default="flat", help="per-layer shape")

    def validate(self, source) -> None:
        if (self.layer_min is None) != (self.layer_max is None):
            raise InputError(source, "layer_min", "layer_min and layer_max together")
        if self.layer_min is not None:
            if self.mean is None or not self.layer_min <= self.mean <= self.layer_max:
                raise InputError(source, "mean", "a mean between layer_min and layer_max", self.mean)


@dataclass(frozen=True, kw_only=True)
class ReuseProfile:
    window: int = spec_field(lo=1, hi=64, help="window k (tokens)")
    target: float = spec_field(gt=0.0, hi=0.999, help="share of a token's active set inside the previous k tokens' union")


@dataclass(frozen=True, kw_only=True)
class MoEProfile:
    first_repeat: dict[str, float] = spec_field(help="layer -> P(first-choice expert repeats), e.g. {'0': 0.141}")
    pair_overlap: dict[str, float] = spec_field(help="layer -> P(routed pair overlaps the previous token's)")
    popularity: float | None = spec_field(
        default=None, gt=0.0, hi=4.0,
        help="Zipf exponent of expert popularity within a layer (the r-th most used expert is drawn with weight r^-s; "
        "ranks fixed per model and layer); absent: every expert equally likely",
    )

    def validate(self, source) -> None:
        for name, d in (("first_repeat", self.first_repeat), ("pair_overlap", self.pair_overlap)):
            if not d:
                raise InputError(source, name, "at least one layer")
            for k, v in d.items():
                if not k.isdigit():
                    raise InputError(source, f"{name}.{k}", "layer indices as keys")
                if not 0.0 < v < 1.0:
                    raise InputError(source, f"{name}.{k}", "a probability strictly between 0 and 1", v)
        if set(self.first_repeat) != set(self.pair_overlap):
            raise InputError(source, "pair_overlap", "the same layers as first_repeat")


@dataclass(frozen=True, kw_only=True)
class SynthProfile:
    model: str = spec_field(help="model this profile describes (models/<model>.yaml)")
    activation: Literal["zero", "magnitude"] = spec_field(help="'zero' (ReLU family) or 'magnitude' (thresholded SiLU)")
    levels: list[float] | None = spec_field(default=None, help="magnitude kind: replay sparsity levels, ascending")
    sparsity: SparsityProfile = spec_field(default_factory=SparsityProfile)
    hot80: list[float] = spec_field(help="hot@80 target (one per level for magnitude profiles)")
    live_share: float = spec_field(
        default=1.0,
        gt=0.05,
        hi=1.0,
        help="share of each FFN's neurons that fire at all in this domain; the rest never do (zero kind only)",
    )
    reuse: ReuseProfile = spec_field(help="temporal reuse target")
    intensity_cv: float = spec_field(lo=0.0, hi=2.0, help="CV of the number of active neurons per token (per layer)")
    intensity_layer_corr: float = spec_field(lo=0.0, hi=1.0, help="correlation of per-token active counts between layers")
    prompt_tokens: int = spec_field(default=64, lo=0, hi=100_000, help="prompt tokens before decoding")
    moe: MoEProfile | None = spec_field(default=None, help="router statistics (MoE models)")

    def validate(self, source) -> None:
        if self.activation == "magnitude":
            if self.live_share != 1.0:
                raise InputError(source, "live_share", "1 for a magnitude profile (a SiLU neuron is never exactly silent)", self.live_share)
            if not self.levels or sorted(self.levels) != list(self.levels) or len(set(self.levels)) != len(self.levels):
                raise InputError(source, "levels", "an ascending list of distinct sparsity levels", self.levels)
            if any(not 0 < s < 1 for s in self.levels) or len(self.levels) > 15:
                raise InputError(source, "levels", "at most 15 levels strictly between 0 and 1", self.levels)
            if len(self.hot80) != len(self.levels):
                raise InputError(source, "hot80", f"one value per level ({len(self.levels)})", self.hot80)
        else:
            if self.levels is not None:
                raise InputError(source, "levels", "no levels for a zero-kind (ReLU family) profile")
            if self.sparsity.mean is None:
                raise InputError(source, "sparsity.mean", "a mean sparsity for a zero-kind profile")
            if len(self.hot80) != 1:
                raise InputError(source, "hot80", "a single value for a zero-kind profile", self.hot80)
        for i, h in enumerate(self.hot80):
            if not 0.05 < h < 0.8:
                raise InputError(source, f"hot80[{i}]", "a share between 0.05 and 0.8 (0.8 means no skew)", h)
        if self.activation == "zero":
            active = 1.0 - float(self.sparsity.layer_min if self.sparsity.layer_min is not None else self.sparsity.mean)
            if active / self.live_share >= 0.95:
                raise InputError(source, "live_share", f"a live share well above the active share ({active:.3f})", self.live_share)
            if not self.hot80[0] < 0.8 * self.live_share:
                raise InputError(
                    source, "hot80[0]", f"below 0.8 x live_share ({0.8 * self.live_share:.3f}): hot@80 counts all neurons", self.hot80[0]
                )


def profile_path(name: str) -> Path:
    return resources.resolve("traces", f"profiles/{name}" if "/" not in name and not Path(name).is_file() else name, what="--profile")


def load_profile(name_or_path: str | Path) -> tuple[SynthProfile, Path]:
    text = str(name_or_path)
    if text.endswith(".yaml") or "/" in text:
        path = Path(text)
        if not path.is_file():
            path = resources.resolve("traces", text, what="--profile")
    else:
        path = resources.data_dir("traces") / "profiles" / f"{text}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in (resources.data_dir("traces") / "profiles").glob("*.yaml"))
            raise InputError(None, "--profile", f"a synthetic profile ({', '.join(names)})", text)
    data = yamlio.load(path)
    if not isinstance(data, dict):
        raise InputError(path, None, "a mapping (synthetic sparsity profile)")
    return schema.build(SynthProfile, data, path), path


# ----------------------------------------------------------------------------- calibration


def layer_sparsities(p: SparsityProfile, n_layers: int) -> np.ndarray:
    """Per-layer sparsity with the profile's shape, exactly preserving its mean."""
    if p.layer_min is None:
        return np.full(n_layers, float(p.mean))
    x = np.linspace(0.0, 1.0, n_layers)
    shapes = {
        "flat": np.zeros(n_layers),
        "u": (2 * x - 1) ** 2,
        "hump": 1 - (2 * x - 1) ** 2,
        "ramp_up": x,
        "ramp_down": 1 - x,
    }
    w = shapes[p.shape]
    if np.ptp(w) == 0:
        return np.full(n_layers, float(p.mean))
    w = (w - w.min()) / np.ptp(w)
    # s = layer_min + span * w^gamma with gamma chosen so mean(s) == mean (monotone in gamma)
    span = p.layer_max - p.layer_min
    target = (p.mean - p.layer_min) / span

    def mean_for(gamma: float) -> float:
        return float(np.mean(w**gamma))

    gamma = _bisect(lambda g: mean_for(math.exp(g)), -6.0, 6.0, target, increasing=False)
    return p.layer_min + span * w ** math.exp(gamma)


def hot_share_of(freq: np.ndarray, share: float = 0.8) -> float:
    c = np.sort(freq)[::-1].cumsum()
    return float((np.searchsorted(c, share * c[-1]) + 1) / len(freq))


def solve_sigma(active: float, hot80: float, q: np.ndarray) -> float:
    """Skew sigma such that frequencies Phi(mu + sigma q) with mean ``active`` have this hot@80."""

    def hot(sig: float) -> float:
        mu = float(_phi_inv(np.array([active]))[0]) * math.sqrt(1 + sig * sig)
        return hot_share_of(_phi_cdf(mu + sig * q))

    if hot(0.0) <= hot80:
        return 0.0
    return _bisect(hot, 0.0, 8.0, hot80, increasing=False)


def mu_for(active: float, sigma: float) -> float:
    return float(_phi_inv(np.array([active]))[0]) * math.sqrt(1 + sigma * sigma)


_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)
_GH_W = _GH_W / _GH_W.sum()


def intensity_cv(tau: np.ndarray, beta: float) -> float:
    """CV of the active count when x_i = sqrt(1-beta) z_i + sqrt(beta) g, active iff x_i > tau_i."""
    from .synth_kernel import active_moments

    s = math.sqrt(max(1e-12, 1 - beta))
    mean_g, var_g = np.empty(len(_GH_X)), np.empty(len(_GH_X))
    active_moments(np.ascontiguousarray(tau, np.float64), math.sqrt(beta), s, _GH_X, mean_g, var_g)
    m = float((_GH_W * mean_g).sum())
    var = float((_GH_W * (var_g + mean_g**2)).sum()) - m * m
    return math.sqrt(max(var, 0.0)) / m if m > 0 else 0.0


def solve_beta(tau: np.ndarray, cv: float) -> float:
    if intensity_cv(tau, 0.0) >= cv:
        return 0.0
    return _bisect(lambda b: intensity_cv(tau, b), 0.0, 0.95, cv, increasing=True, iters=30)


def window_reuse(tau: np.ndarray, beta: float, rho: float, k: int, tokens: int, seed: int) -> float:
    """Simulated windowed reuse (share of A_t inside the union of the previous k active sets)."""
    rng = np.random.default_rng(seed)
    n = len(tau)
    z = rng.standard_normal(n)
    g = rng.standard_normal()
    s = math.sqrt(1 - rho * rho)
    last = np.full(n, -(10**9))
    hit = tot = 0
    sb, s1 = math.sqrt(beta), math.sqrt(1 - beta)
    for t in range(tokens):
        z = rho * z + s * rng.standard_normal(n)
        g = rho * g + s * rng.standard_normal()
        on = np.flatnonzero(s1 * z + sb * g > tau)
        if t >= k + 8:  # burn-in
            hit += int((t - last[on] <= k).sum())
            tot += len(on)
        last[on] = t
    return hit / max(1, tot)


def solve_rho(tau: np.ndarray, beta: float, k: int, target: float, seed: int) -> float:
    fn = lambda r: window_reuse(tau, beta, r, k, 320, seed)  # noqa: E731 - common random numbers
    if fn(0.0) >= target:
        return 0.0
    return _bisect(fn, 0.0, 0.995, target, increasing=True, iters=22)


def popularity_weights(model_name: str, n_layers: int, n_experts: int, exponent: float) -> np.ndarray:
    """[L, E] draw probabilities of the experts of each layer: Zipf with ``exponent`` over ranks
    placed by a permutation fixed by the model's name (as the hot neurons are)."""
    digest = hashlib.sha256(f"pi2sim-expert-popularity:{model_name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    base = np.arange(1, n_experts + 1, dtype=np.float64) ** -exponent
    base /= base.sum()
    return np.stack([base[rng.permutation(n_experts)] for _ in range(n_layers)])


def router_params(first_repeat: float, pair_overlap: float, n_experts: int, chance: float | None = None) -> tuple[float, float]:
    """Closed-form (a, q) of the pair-Markov router for the two Mixtral Table 5 columns.

    First choice: repeat with probability ``a``, else uniform over all experts, so
    ``P(first repeats) = a + (1 - a)/E``. P(first choice in previous pair) = ``a + 2(1 - a)/E``.
    If it is not, the second choice is one of the previous pair with probability ``q``, so
    ``P(overlap) = p1 + (1 - p1) q``.
    """
    E = n_experts
    c = 1.0 / E if chance is None else chance  # P(a fresh draw is a given earlier draw): 1/E, or sum(w^2) with popularity
    a = (first_repeat - c) / (1.0 - c)
    if not 0.0 <= a <= 1.0:
        raise InputError(None, "moe.first_repeat", f"a repetition rate between {c:.3f} (chance) and 1", first_repeat)
    p1 = a + 2.0 * (1.0 - a) * c
    q = (pair_overlap - p1) / (1.0 - p1)
    if not 0.0 <= q <= 1.0:
        raise InputError(None, "moe.pair_overlap", f"an overlap rate between {p1:.3f} and 1 given first_repeat", pair_overlap)
    return a, q


def _interp_layers(points: dict[str, float], n_layers: int) -> np.ndarray:
    xs = sorted(int(k) for k in points)
    ys = [points[str(x)] for x in xs]
    return np.interp(np.arange(n_layers), xs, ys)


@dataclass
class Calibration:
    sparsity: np.ndarray  # [L] (lowest level for magnitude)
    sigma: np.ndarray  # [levels, L]
    beta: float
    gamma: float
    rho: float
    mu: np.ndarray  # [levels, L]
    router: list[tuple[float, float]] | None  # per layer (a, q)
    live_share: float = 1.0  # mu and sigma describe the live neurons' frequencies
    popularity: np.ndarray | None = None  # [L, E] experts' draw probabilities (None: uniform)

    def to_json(self) -> dict:
        return {
            "live_share": self.live_share,
            "layer_sparsity": [round(float(x), 6) for x in self.sparsity],
            "sigma": [[float(x) for x in row] for row in self.sigma],
            "mu": [[float(x) for x in row] for row in self.mu],
            "beta": round(self.beta, 6),
            "gamma": round(self.gamma, 6),
            "rho": round(self.rho, 6),
            "router_a_q": None if self.router is None else [[round(a, 6), round(q, 6)] for a, q in self.router],
            **({} if self.popularity is None else {"expert_popularity_top_share": [round(float(np.sort(w)[-1]), 6) for w in self.popularity]}),
        }


def calibrate_cached(profile: SynthProfile, profile_file: Path, n_layers: int, n_neurons: int, n_experts: int, seed: int) -> Calibration:
    """:func:`calibrate`, kept on disk (:mod:`pi2sim.diskcache`; ~0.7 s for Mixtral): a function
    of the profile file, the model's shape, the seed and this package's code, stored exactly
    (float64 arrays), so a loaded calibration generates the same trace as a computed one."""
    from .. import diskcache

    key = hashlib.blake2b(repr(("synth-calibration", hashlib.sha256(profile_file.read_bytes()).hexdigest(), n_layers, n_neurons,
                                n_experts, seed, diskcache.code_digest("trace"))).encode(), digest_size=20).hexdigest()

    def compute():
        c = calibrate(profile, n_layers, n_neurons, n_experts, seed)
        router = None if c.router is None else np.array(c.router, np.float64)
        return (c.sparsity, c.sigma, c.mu, np.array([c.beta, c.gamma, c.rho, c.live_share], np.float64), router, c.popularity)

    sp, sigma, mu, scalars, router, popularity = diskcache.persisted(key, compute)
    beta, gamma, rho, live = (float(x) for x in scalars)
    return Calibration(sparsity=sp, sigma=sigma, beta=beta, gamma=gamma, rho=rho, mu=mu,
                       router=None if router is None else [(float(a), float(q)) for a, q in router], live_share=live, popularity=popularity)


def calibrate(profile: SynthProfile, n_layers: int, n_neurons: int, n_experts: int, seed: int) -> Calibration:
    live = profile.live_share
    q_live = _quantiles(n_neurons - dead_count(n_neurons, live))
    if profile.activation == "zero":
        sp = layer_sparsities(profile.sparsity, n_layers)
        per_level = [sp]
    else:
        sp = np.full(n_layers, profile.levels[0])
        per_level = [np.full(n_layers, s) for s in profile.levels]
    sigma = np.zeros((len(per_level), n_layers))
    mu = np.zeros_like(sigma)
    solved: dict[tuple[float, float], float] = {}
    for j, (lsp, h) in enumerate(zip(per_level, profile.hot80)):
        for l, s_l in enumerate(lsp):
            # the live neurons carry all the activity: their mean rate is active / live, and the
            # hottest neurons are all live, so hot@80 over the live ones is hot@80 / live
            a_live = (1.0 - float(s_l)) / live
            key = (round(float(s_l), 9), h)
            if key not in solved:
                solved[key] = solve_sigma(a_live, h / live, q_live)
            sigma[j, l] = solved[key]
            mu[j, l] = mu_for(a_live, sigma[j, l])
    # intensity and reuse are calibrated on the layer closest to the mean sparsity, densest level
    l_ref = int(np.argmin(np.abs(sp - sp.mean())))
    tau = thresholds_of(mu[0, l_ref], sigma[0, l_ref], rank_quantiles(n_neurons, live))
    beta = solve_beta(tau, profile.intensity_cv)
    sample = tau[np.random.default_rng(seed).permutation(n_neurons)[: min(n_neurons, 4096)]]
    rho = solve_rho(sample, beta, profile.reuse.window, profile.reuse.target, seed)
    router = None
    popularity = None
    if n_experts > 1:
        if profile.moe is None:
            raise InputError(None, "moe", "router statistics for an MoE model's profile")
        fr = _interp_layers(profile.moe.first_repeat, n_layers)
        po = _interp_layers(profile.moe.pair_overlap, n_layers)
        if profile.moe.popularity is not None:
            popularity = popularity_weights(profile.model, n_layers, n_experts, profile.moe.popularity)
            router = [router_params(float(a), float(b), n_experts, chance=float((w * w).sum())) for a, b, w in zip(fr, po, popularity)]
        else:
            router = [router_params(float(a), float(b), n_experts) for a, b in zip(fr, po)]
    return Calibration(
        sparsity=sp, sigma=sigma, beta=beta, gamma=profile.intensity_layer_corr, rho=rho, mu=mu, router=router, live_share=live,
        popularity=popularity,
    )


# ----------------------------------------------------------------------------- generation


MODEL_SEED = 20240610  # fixed: calibration samples and the neuron-to-frequency assignment are part of the model


@functools.lru_cache(maxsize=2)
def neuron_permutation(model_name: str, n_layers: int, n_experts: int, n_neurons: int) -> np.ndarray:
    """[L, E, N]: the frequency-quantile index of every neuron (a permutation per layer and
    expert), fixed by the model's name, so every trace of a model shares its hot neurons (as
    offline profiling on other text would find them). Read-only, kept for the last two models:
    a first run needs it to generate the trace and again for the neuron profile."""
    digest = hashlib.sha256(f"pi2sim-neurons:{model_name}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    perm = np.stack([np.stack([rng.permutation(n_neurons) for _ in range(n_experts)]) for _ in range(n_layers)])
    perm.flags.writeable = False
    return perm


def thresholds(cal: "Calibration", model_name: str, n_layers: int, n_experts: int, n_neurons: int) -> np.ndarray:
    """Activation thresholds on the latent, [level, L, E, N], nested across levels: computed on
    each layer's N distinct quantiles, then placed by each expert's permutation (the same numbers
    as element by element, E times less work, as in :func:`population_frequencies`)."""
    q = rank_quantiles(n_neurons, cal.live_share)
    tau = np.stack([thresholds_of(cal.mu[j][:, None], cal.sigma[j][:, None], q[None, :]) for j in range(cal.mu.shape[0])])  # [level, L, N]
    for j in range(1, tau.shape[0]):
        tau[j] = np.maximum(tau[j], tau[j - 1])
    perm = neuron_permutation(model_name, n_layers, n_experts, n_neurons)
    return tau[:, np.arange(n_layers)[:, None, None], perm]


def population_frequencies(calibration: dict, model_name: str, n_layers: int, n_neurons: int, n_experts: int) -> np.ndarray:
    """Long-run firing probability of every neuron, [level, L, E, N] (given its expert is routed),
    from the calibration a synthetic trace records in its provenance.

    This is what PowerInfer-2's offline profiler measures on 10M+ tokens (v3 §5): the planner's
    input for choosing hot neurons, independent of the requests being replayed."""
    mu = np.asarray(calibration["mu"], dtype=np.float64)
    sigma = np.asarray(calibration["sigma"], dtype=np.float64)
    # thresholds() element by element, but on the N distinct quantiles of each layer, then placed
    # by each expert's permutation: the same numbers, E times less work (Mixtral: 8x)
    q = rank_quantiles(n_neurons, float(calibration.get("live_share", 1.0)))
    tau = np.stack([thresholds_of(mu[j][:, None], sigma[j][:, None], q[None, :]) for j in range(mu.shape[0])])  # [level, L, N]
    for j in range(1, tau.shape[0]):
        tau[j] = np.maximum(tau[j], tau[j - 1])
    f = _phi_cdf(-tau).astype(np.float32)
    perm = neuron_permutation(model_name, n_layers, n_experts, n_neurons)
    return f[:, np.arange(n_layers)[:, None, None], perm]


def _route_ids(rng: np.random.Generator, prev: list[int] | None, a: float, q: float, E: int, top_k: int, w: np.ndarray | None = None) -> list[int]:
    """The next token's routed experts, given the previous token's (None: the first token). The
    first choice repeats the previous first with probability ``a``, else is a fresh draw; each
    further slot is one of the previous experts not yet chosen with probability ``q``, else one
    of the others (the pair-Markov router of :func:`router_params`, extended to more slots).
    Fresh draws are uniform, or by the popularity weights ``w`` [E] when the profile has them."""
    if w is None:
        if prev is None:
            return [int(x) for x in rng.choice(E, top_k, replace=False)]
        first = prev[0] if rng.random() < a else int(rng.integers(E))
    else:
        if prev is None:
            return [int(x) for x in rng.choice(E, top_k, replace=False, p=w)]
        first = prev[0] if rng.random() < a else int(rng.choice(E, p=w))
    chosen = [first]
    for _ in range(1, top_k):
        cands_prev = [e for e in prev if e not in chosen]
        cands_new = [e for e in range(E) if e not in chosen and e not in prev]
        if cands_prev and (not cands_new or rng.random() < q):
            chosen.append(cands_prev[int(rng.integers(len(cands_prev)))])
        elif w is None:
            chosen.append(cands_new[int(rng.integers(len(cands_new)))])
        else:
            p = w[cands_new]
            chosen.append(cands_new[int(rng.choice(len(cands_new), p=p / p.sum()))])
    return chosen


class _Stream:
    """The generator's state between tokens: the AR(1) latents, the intensity factors, the
    routers' last pairs and each expert's last routing, and the numpy generator the per-token
    draws (intensity, routing) come from. The per-neuron innovations come from the
    counter-based kernel (:mod:`pi2sim.trace.synth_kernel`), so a stream advanced to token t is
    the same whether it got there in one call or several, in this process or from a saved state."""

    def __init__(self, cal: "Calibration", tau: np.ndarray, n_layers: int, n_neurons: int, n_experts: int, top_k: int, seed: int):
        from .synth_kernel import gather_live, live_neurons

        self.cal, self.tau = cal, tau
        self.live_index, self.live_count = live_neurons(tau)
        self.tau_live = gather_live(tau, self.live_index, self.live_count)  # the step streams these contiguously
        self.L, self.N, self.E = n_layers, n_neurons, n_experts
        self.K = top_k if n_experts > 1 else 1
        self.top_k = top_k
        self.key = np.uint64(int.from_bytes(hashlib.sha256(f"pi2sim-synth-innovations:{seed}".encode()).digest()[:8], "little"))
        self.rng = np.random.default_rng([seed, 1])
        self.z = self.rng.standard_normal((n_layers, n_experts, n_neurons), dtype=np.float32)
        self.z_live = gather_live(self.z, self.live_index, self.live_count)  # the latents that move (self.z keeps the dead ones')
        self.G = float(self.rng.standard_normal())
        self.g = self.rng.standard_normal(n_layers)
        self.prev_route = np.full((n_layers, self.K), -1, np.int16)  # -1: not routed yet
        self.last_used = np.full((n_layers, n_experts), -1, np.int64)  # token of each expert's last routing (MoE)
        self.t = 0

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, np.ndarray]:
        from .synth_kernel import scatter_live

        z = scatter_live(self.z, self.z_live, self.live_index, self.live_count)
        return {"z": z, "g": self.g, "prev_route": self.prev_route, "last_used": self.last_used,
                "G": np.float64(self.G), "t": np.int64(self.t), "rng": np.array(json.dumps(self.rng.bit_generator.state))}

    def restore(self, st) -> None:
        from .synth_kernel import gather_live

        self.z = np.array(st["z"], np.float32)
        self.z_live = gather_live(self.z, self.live_index, self.live_count)
        self.g = np.array(st["g"], np.float64)
        self.prev_route = np.array(st["prev_route"], np.int16)
        self.last_used = np.array(st["last_used"], np.int64)
        self.G = float(st["G"])
        self.t = int(st["t"])
        self.rng.bit_generator.state = json.loads(str(st["rng"]))

    # ------------------------------------------------------------------ tokens
    def tokens(self, n: int, codes: np.ndarray, experts: np.ndarray | None) -> None:
        """Advance ``n`` tokens, writing their codes [n, L, K, N] (and routed experts [n, L, K])."""
        from .synth_kernel import normal_table, step

        cal, L = self.cal, self.L
        rho = cal.rho
        innov = math.sqrt(1 - rho * rho)
        sg, sl = math.sqrt(cal.gamma), math.sqrt(1 - cal.gamma)
        s1, sb = np.float32(math.sqrt(1 - cal.beta)), np.float32(math.sqrt(cal.beta))
        table = normal_table()
        lidx = np.arange(L)[:, None]
        zeros = np.zeros((L, 1), np.int64)
        a_dense = np.full((L, 1), rho, np.float32)
        s_dense = np.full((L, 1), innov, np.float32)
        for j in range(n):
            routes, a32, s32, h = self._next_token_inputs(j, experts, lidx, zeros, a_dense, s_dense, rho, innov, sg, sl)
            step(self.z_live, routes, a32, s32, self.tau_live, h, s1, sb, self.key, self.t - 1, table, codes[j], self.live_index, self.live_count)

    def _next_token_inputs(self, j, experts, lidx, zeros, a_dense, s_dense, rho, innov, sg, sl):
        """Token ``self.t``'s routing (written to ``experts[j]``), AR(1) coefficients since each
        routed expert's last turn, and shared intensity, drawn from the stream's generator;
        advances ``self.t``."""
        cal, L, E = self.cal, self.L, self.E
        self.G = rho * self.G + innov * float(self.rng.standard_normal())
        self.g = rho * self.g + innov * self.rng.standard_normal(L)
        h = (sg * self.G + sl * self.g).astype(np.float32)  # intensity per layer, partly shared
        if E == 1:
            routes, a32, s32 = zeros, a_dense, s_dense
        else:
            prev_all = self.prev_route.tolist()
            pop = cal.popularity
            routes = np.array([_route_ids(self.rng, prev if prev[0] >= 0 else None, *cal.router[l], E, self.top_k, None if pop is None else pop[l])
                               for l, prev in enumerate(prev_all)], np.int64)
            self.prev_route[:] = routes
            experts[j] = routes
            # an expert routed again after a gap of d tokens has moved d AR(1) steps, drawn at
            # once (rho^d, exact for the stationary process); see the module docstring
            gap = (self.t - self.last_used[lidx, routes]).astype(np.float64)
            a_gap = np.power(rho, gap)
            self.last_used[lidx, routes] = self.t
            a32 = a_gap.astype(np.float32)
            s32 = np.sqrt(np.maximum(0.0, 1.0 - a_gap * a_gap)).astype(np.float32)
        self.t += 1
        return routes, a32, s32, h


def _meta(model_name: str, n_layers: int, n_neurons: int, n_experts: int, top_k: int, profile: SynthProfile, profile_file: Path,
          cal: "Calibration", decode_tokens: int, seed: int, prompt_tokens: int) -> TraceMeta:
    levels = (
        (ActivationLevel(name="nonzero"),)
        if profile.activation == "zero"
        else tuple(ActivationLevel(name=f"s{round(s * 100)}", sparsity=float(s)) for s in profile.levels)
    )
    provenance = {
        "kind": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "profile": profile_file.name,
        "profile_sha256": hashlib.sha256(profile_file.read_bytes()).hexdigest(),
        "seed": seed,
        "model_seed": MODEL_SEED,
        "decode_tokens": decode_tokens,
        "prompt_tokens": prompt_tokens,
        "calibration": cal.to_json(),
    }
    return TraceMeta(
        model=model_name, n_layers=n_layers, n_neurons=n_neurons, n_experts=n_experts,
        top_k=top_k if n_experts > 1 else 1, activation_kind=profile.activation, levels=levels,
        sequences=({"index": 0, "n_prompt": prompt_tokens, "n_decode": decode_tokens, "task": "synthetic"},),
        provenance=provenance, codec="zstd",
    )


CHUNK = 64  # tokens per trace block


def generate(
    out: str | Path,
    model_name: str,
    n_layers: int,
    n_neurons: int,
    n_experts: int,
    top_k: int,
    profile: SynthProfile,
    profile_file: Path,
    decode_tokens: int,
    seed: int,
    prompt_tokens: int | None = None,
    progress: bool = True,
    extend_from: Path | None = None,
    state_out: Path | None = None,
) -> TraceMeta:
    """Generate a synthetic trace into ``out`` and return its metadata.

    ``extend_from``: an existing trace of the same model, seed and prompt (and its state file,
    ``<trace>.state.npz``) whose tokens become the first ones of ``out``; generation resumes
    where it stopped, so the result is byte for byte the trace a single call would write.
    ``state_out``: where to save the generator's state after the last token (for a later
    extension)."""
    t0 = time.time()
    P = profile.prompt_tokens if prompt_tokens is None else prompt_tokens
    cal = calibrate_cached(profile, profile_file, n_layers, n_neurons, n_experts, MODEL_SEED)
    tau = thresholds(cal, model_name, n_layers, n_experts, n_neurons).astype(np.float32)  # [level, L, E, N]
    stream = _Stream(cal, tau, n_layers, n_neurons, n_experts, top_k, seed)
    meta = _meta(model_name, n_layers, n_neurons, n_experts, top_k, profile, profile_file, cal, decode_tokens, seed, P)
    total = P + decode_tokens
    K, E = stream.K, n_experts
    with TraceWriter(out, meta, chunk_tokens=CHUNK) as w:
        done = 0
        if extend_from is not None:
            from .format import Trace

            with np.load(state_path(extend_from), allow_pickle=False) as st:
                stream.restore(st)
            with Trace(extend_from) as old:
                if stream.t != len(old) or len(old) > total:
                    raise ValueError("state does not match its trace")
                done = _copy_tokens(old, w, len(old))
        buf_codes = np.zeros((CHUNK, n_layers, K, n_neurons), np.uint8)
        buf_exp = np.zeros((CHUNK, n_layers, K), np.uint8) if E > 1 else None
        start = done
        while start < total:
            n = min(CHUNK - start % CHUNK, total - start)  # keep blocks aligned to the stream's chunks
            stream.tokens(n, buf_codes, buf_exp)
            phase = np.where(np.arange(start, start + n) < P, PHASE_PROMPT, PHASE_DECODE).astype(np.uint8)
            w.append(np.full(n, -1, np.int32), np.zeros(n, np.int32), phase, buf_codes[:n], None if buf_exp is None else buf_exp[:n])
            start += n
            if progress:
                print(f"\r[synth] {model_name}: {start}/{total} tokens, {time.time() - t0:.1f} s", end="", file=sys.stderr, flush=True)
    if state_out is not None:
        import io

        from ..atomic import write_bytes

        buf = io.BytesIO()
        np.savez(buf, **stream.state())
        write_bytes(state_out, buf.getvalue())
    if progress:
        print(file=sys.stderr)
    return w.meta


# ----------------------------------------------------------------------------- cache


def cache_key(model_file: Path, profile_file: Path, seed: int, prompt_tokens: int) -> str:
    """The cache entry of a (model, profile, generator, seed, prompt length): not the decode
    length, since every length is a prefix of the longest generated."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": GENERATOR_VERSION, "seed": seed, "p": prompt_tokens}).encode())
    h.update(Path(model_file).read_bytes())
    h.update(Path(profile_file).read_bytes())
    return h.hexdigest()[:20]


def state_path(trace: Path) -> Path:
    """The generator state saved beside a cached synthetic trace (to extend it later)."""
    return trace.with_name(trace.name + ".state.npz")


def _decode_tokens_of(path: Path) -> int | None:
    from .format import Trace

    try:
        with Trace(path) as t:
            return int(t.meta.sequences[0]["n_decode"])
    except (InputError, KeyError, IndexError):
        path.unlink(missing_ok=True)  # a damaged cache entry is regenerated, never used
        return None


def synthesize_cached(model, decode_tokens: int, seed: int = 0, prompt_tokens: int | None = None, progress: bool = True) -> Path:
    """Path of a synthetic trace for ``model`` (a ModelSpec) with at least ``decode_tokens``
    decode tokens, generating or extending it on first use.

    The cache holds one trace per (model file, profile file, generator version, prompt length,
    seed) under ``pi2sim.resources.cache_dir()/traces``; a run replays the first
    ``decode_tokens`` of it (:mod:`pi2sim.access.workload`), which are exactly the trace a run of
    that length would have generated (prefix-stable generation). A longer run extends the file
    from its saved generator state, without regenerating what is there, and replaces it
    atomically.
    """
    profile_name = model.sparsity.profile or model.name
    profile, pfile = load_profile(profile_name)
    if profile.model != model.name:
        raise InputError(pfile, "model", f"the profile of model {model.name!r}", profile.model)
    P = profile.prompt_tokens if prompt_tokens is None else prompt_tokens
    key = cache_key(Path(model.path), pfile, seed, P)
    path = resources.cache_dir() / "traces" / f"{model.name}-s{seed}-p{P}-{key}.pi2t"
    have = _decode_tokens_of(path) if path.is_file() else None
    if have is not None and have >= decode_tokens:
        return path
    a = model.architecture
    extend = path if have is not None and state_path(path).is_file() else None
    args = (model.name, a.layers, a.ffn_neurons, a.experts, a.top_k, profile, pfile, decode_tokens, seed, P, progress)
    try:
        generate(path, *args, extend_from=extend, state_out=state_path(path))
    except (ValueError, KeyError, OSError) as e:
        if extend is None or isinstance(e, PermissionError):
            raise
        generate(path, *args, state_out=state_path(path))  # a state that does not match its trace (a concurrent writer): start over
    return path


def write_prefix(src: Path, dst: Path, decode_tokens: int) -> None:
    """Copy the first ``decode_tokens`` decode tokens (and the prompt) of a synthetic trace."""
    from dataclasses import replace

    from .format import Trace

    with Trace(src) as t:
        m = t.meta
        P = int(m.sequences[0]["n_prompt"])
        total = P + decode_tokens
        seqs = (dict(m.sequences[0], n_decode=decode_tokens),)
        meta = replace(m, n_tokens=0, sequences=seqs, provenance=dict(m.provenance, decode_tokens=decode_tokens))
        with TraceWriter(dst, meta, chunk_tokens=CHUNK) as w:
            _copy_tokens(t, w, total)


def _copy_tokens(src, w: TraceWriter, stop: int) -> int:
    """Append tokens ``[0, stop)`` of the open trace ``src`` to ``w``; returns how many."""
    n = 0
    for b in src.iter_blocks():
        if b.start >= stop:
            break
        k = min(len(b), stop - b.start)
        w.append(b.token_id[:k], b.seq[:k], b.phase[:k], b.codes[:k], None if b.experts is None else b.experts[:k])
        n += k
    return n
