"""The synthetic generator's inner loop, compiled: one token's latent update and activation codes.

Per token the generator moves every routed neuron's latent one AR(1) step (``z <- a z + s e``,
``e`` standard normal) and codes it against its thresholds (a dead neuron, which can never fire,
is skipped: its code is 0 whatever its latent). Drawing those innovations with
numpy's generator cost ~11 ms per TurboSparse-Mixtral token here (917,504 normals), the whole
of synthesis. This kernel draws them from a counter-based generator instead: the innovation of
(token t, layer l, routed slot k, neuron i) is a pure function of the trace's key and that
counter (splitmix64 of ``key ^ counter``), turned into a normal by a 65,536-cell inverse-CDF
table with linear interpolation (exact quantiles, in float64, in the two outermost cells). So:

* a token's numbers do not depend on how many tokens came before or after it, nor on the number
  of threads (layers run in parallel, every element independently): a trace of N tokens is the
  first N tokens of any longer one with the same key, and extending a trace resumes it exactly;
* quality: mean, variance and tails match the normal to sampling precision (interpolation error
  below 1e-5 in z; ``tests/test_synth.py`` checks the moments and the 3- and 4-sigma tails).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

TABLE_BITS = 16
_CELLS = 1 << TABLE_BITS
_TABLE: np.ndarray | None = None


def normal_table() -> np.ndarray:
    """Standard-normal quantiles at p = j / 2**16 (the end points at the outer cells' centres)."""
    global _TABLE
    if _TABLE is None:
        from .. import diskcache

        def build() -> np.ndarray:
            from statistics import NormalDist

            nd = NormalDist()
            p = np.arange(_CELLS + 1) / _CELLS
            p[0], p[-1] = 0.5 / _CELLS, 1.0 - 0.5 / _CELLS  # never used for interpolation (outer cells are exact)
            return np.array([nd.inv_cdf(float(x)) for x in p], np.float64)

        # 65,537 quantiles in Python take 70 ms: kept on disk with the other start-up results
        _TABLE = diskcache.persisted(f"normal-table-{TABLE_BITS}-{diskcache.code_digest('trace')}", build)
    return _TABLE


@njit(cache=True, nogil=True, inline="always")
def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _acklam(p):
    """Standard-normal quantile, Acklam's rational approximation (relative error < 1.2e-9)."""
    if p < 0.02425 or p > 0.97575:
        lo = p < 0.5
        q = math.sqrt(-2.0 * math.log(p if lo else 1.0 - p))
        x = (((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
              + 4.374664141464968e+00) * q + 2.938163982698783e+00) / \
            ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0)
        return x if lo else -x
    q = p - 0.5
    r = q * q
    return (((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r - 2.759285104469687e+02) * r + 1.383577518672690e+02) * r
             - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q / \
        (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r - 1.556989798598866e+02) * r + 6.680131188771972e+01) * r
          - 1.328068155288572e+01) * r + 1.0)


@njit(cache=True, nogil=True, inline="always")
def normal_of(u, table):
    """A standard normal from 64 random bits: the top 16 pick a table cell, the next 32 the point
    inside it; the outermost cells (p < 2**-16 or > 1 - 2**-16) take the exact quantile."""
    cell = int(u >> np.uint64(64 - TABLE_BITS))
    if cell == 0 or cell == _CELLS - 1:
        p = (float(u >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)
        return _acklam(p)
    frac = float((u >> np.uint64(64 - TABLE_BITS - 32)) & np.uint64(0xFFFFFFFF)) * (1.0 / 4294967296.0)
    return table[cell] + (table[cell + 1] - table[cell]) * frac


@njit(cache=True, nogil=True, parallel=True)
def fill_normals(out, key, first, table):
    """``out[j]`` = the innovation of counter ``first + j`` (tests, statistics)."""
    for j in prange(out.size):
        out[j] = normal_of(splitmix64(key ^ np.uint64(first + j)), table)


def live_neurons(tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The neurons that can fire, per (layer, expert): ``(index [L, E, M], count [L, E])``, the
    indices ascending (uint16 when N fits, else int32), ``M`` the largest count. A dead neuron (every threshold +inf) never fires, so
    :func:`step` neither draws nor updates its latent (about half of Mixtral's neurons)."""
    live = np.isfinite(tau).any(axis=0)  # [L, E, N]
    count = live.sum(axis=2).astype(np.int64)
    index = np.zeros(live.shape[:2] + (max(1, int(count.max())),), np.uint16 if live.shape[2] <= 1 << 16 else np.int32)
    for l in range(live.shape[0]):
        for e in range(live.shape[1]):
            ids = np.flatnonzero(live[l, e])
            index[l, e, : len(ids)] = ids
    return index, count


def gather_live(a: np.ndarray, index: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``a`` [..., L, E, N] compacted to its live neurons, [..., L, E, M] (padding 0): the arrays
    :func:`step` streams through contiguously."""
    out = np.zeros(a.shape[:-1] + (index.shape[-1],), a.dtype)
    for l in range(index.shape[0]):
        for e in range(index.shape[1]):
            n = int(count[l, e])
            out[..., l, e, :n] = a[..., l, e, index[l, e, :n]]
    return out


def scatter_live(full: np.ndarray, live: np.ndarray, index: np.ndarray, count: np.ndarray) -> np.ndarray:
    """The inverse of :func:`gather_live` into a copy of ``full`` (dead neurons keep its values)."""
    out = np.array(full, copy=True)
    for l in range(index.shape[0]):
        for e in range(index.shape[1]):
            n = int(count[l, e])
            out[..., l, e, index[l, e, :n]] = live[..., l, e, :n]
    return out


@njit(cache=True, nogil=True, parallel=True)
def step(z, routes, a, s, tau, h, s1, sb, key, t, table, codes, live_index, live_count):
    """One token. ``z`` [L, E, M] float32 latents of the live neurons (:func:`gather_live`;
    updated in place for the routed experts), ``routes`` [L, K] experts routed (E == 1: zeros),
    ``a``/``s`` [L, K] AR(1) decay and innovation scale since each expert's last routing, ``tau``
    [levels, L, E, M] the live neurons' thresholds, ``h`` [L] the shared intensity,
    ``live_index``/``live_count`` from :func:`live_neurons`; writes ``codes`` [L, K, N] (how many
    levels each neuron exceeds; 0 for a dead one). A neuron's draw is a function of its own
    counter (its index ``i`` among all N), so skipping the dead changes no live neuron's numbers."""
    L, K = routes.shape
    N = codes.shape[2]
    n_levels = tau.shape[0]
    for l in prange(L):
        hl = sb * h[l]
        for k in range(K):
            e = routes[l, k]
            ak = a[l, k]
            sk = s[l, k]
            base = ((np.uint64(t) * np.uint64(L) + np.uint64(l)) * np.uint64(K) + np.uint64(k)) * np.uint64(N)
            codes[l, k, :] = 0
            m = live_count[l, e]
            idx = live_index[l, e]
            # two passes, each a simple loop the compiler vectorises: the draws, then the updates
            noise = np.empty(m, np.float32)
            for j in range(m):
                noise[j] = np.float32(normal_of(splitmix64(key ^ (base + np.uint64(idx[j]))), table))
            zl = z[l, e]
            for j in range(m):
                zi = ak * zl[j] + sk * noise[j]
                zl[j] = zi
                x = s1 * zi + hl
                c = 0
                for lv in range(n_levels):
                    if x > tau[lv, l, e, j]:
                        c += 1
                codes[l, k, idx[j]] = c


# ----------------------------------------------------------------------------- calibration
_SQRT2 = math.sqrt(2.0)


@njit(cache=True, nogil=True, inline="always")
def _erfc(x):
    """:func:`pi2sim.trace.synth._erfc` for one number (the same formula, term for term)."""
    z = abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (
        1.00002368
        + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))
    )
    r = t * math.exp(poly)
    return r if x >= 0 else 2.0 - r


@njit(cache=True, nogil=True, parallel=True)
def active_moments(tau, sb, s, nodes, mean_out, var_out):
    """For each quadrature node g: the sum over neurons of p_i = Phi((sb g - tau_i) / s), the
    chance that neuron i fires given the shared intensity g, and of p_i (1 - p_i): the mean and
    variance of the active count given g (:func:`pi2sim.trace.synth.intensity_cv`, which spent
    ~0.5 s of a Mixtral calibration on these 48 x 14,336 normal CDFs in numpy)."""
    for j in prange(len(nodes)):
        m = 0.0
        v = 0.0
        for i in range(len(tau)):
            p = 0.5 * _erfc(-((sb * nodes[j] - tau[i]) / s) / _SQRT2)
            m += p
            v += p * (1.0 - p)
        mean_out[j] = m
        var_out[j] = v
