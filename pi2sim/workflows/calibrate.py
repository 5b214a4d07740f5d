"""Fit the declared free constants to measured scenarios, and measure how well the fit predicts.

**The loss.** Residuals are ``log(simulated / measured)``; the fit minimises a robust
(soft-L1) loss of them at a 10% scale, so a point the model structurally misses moves the
constants no more than a point off by 10% would, times its error.

**The free set.** A constant is free when its YAML comment (device files) or its option help
(policies) says ``fitted to <scenario>`` *and* declares ``bounds: LO..HI`` (with units where the
value has them, e.g. ``bounds: 60 us..200 us``). Constants fitted once to a microbenchmark in
closed form (the UFS and NPU rates of T13) carry no bounds: they are set by the hardware
measurement, not by end-to-end points. Integer options (reader threads, I/O depth) are searched
exhaustively over their bounds; real ones by :func:`scipy.optimize.least_squares` in log space
(relative error, symmetric: a point twice too fast weighs as much as one twice too slow), from
their current values.

**Stages.** The phone's constants (device file) and the reference engine's (PowerInfer-2) are
fitted to PowerInfer-2's points; then each baseline engine's own constants to that engine's
points, with the phone's held (:func:`stages`). A joint fit let the baselines' structural misses
pull the phone's constants: the LLM in a Flash port's Mixtral points (a guessed read path and
cache, +200-300%) moved ``cpu.sparse_efficiency`` by 11% and PowerInfer-2's T1 and T7 with it.

**Speed.** Every evaluation reruns every scenario, but the constants in the free set leave the
access model's inputs unchanged (which neurons are active, cached, read), so after the first
evaluation every run takes its access result from the in-process memo
(:mod:`pi2sim.access.memo`) and only the timing tier runs. Fits use the analytic tier and
``validate --fast`` lengths by default; both agree with the event tiers and full length within
about 1% on the paper's points (docs/fidelity.md, docs/validation.md).

**The overlay.** :func:`write_overlay` stores the fitted values with their provenance (scenario
ids, per-point residuals before and after, pi2sim version, device file hash, a config hash);
``pi2sim run --calibration overlay.yaml`` applies it (:func:`apply_overlay`).

**Cross-validation.** :func:`cross_validate` leaves out one group of points (a figure of the
paper) at a time, refits on the rest and predicts the group: the predictive error is what a
user should expect on a configuration the constants were not fitted to.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import resources, units, yamlio
from ..errors import InputError
from ..version import __version__

_BOUNDS = re.compile(r"bounds:\s*([^\s.][^;)]*?)\s*\.\.\s*([^;)\s][^;)]*?)\s*(?:[;)]|$)")
REFUSED_RESIDUAL = math.log(10.0)  # a refused point counts as ten times off
# Robust loss: errors up to ~10% count quadratically, larger ones linearly, so a few points the
# model cannot reach (a baseline port's structural miss) do not drag every constant towards them.
LOSS, LOSS_SCALE = "soft_l1", 0.1


@dataclass(frozen=True)
class FreeConstant:
    """One constant the fit may move: where it lives, its value and bounds in SI units."""

    scope: str  # "device" or "policy:<name>"
    key: str  # dotted YAML key path (device) or option name (policy)
    value: float
    lo: float
    hi: float
    unit: str  # the unit the file writes it in ('' for a plain number)
    integer: bool
    where: str  # file:line or "policy <name>"
    note: str

    @property
    def prior(self) -> float | None:
        """The value the constant takes before any point is seen (``prior: X`` in its note), which a
        cross-validation fold that cannot identify it predicts with; None: its declared value."""
        m = re.search(r"prior:\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)", self.note)
        return float(m.group(1)) if m else None

    @property
    def name(self) -> str:
        return self.key if self.scope == "device" else f"{self.scope.split(':', 1)[1]}.{self.key}"

    def as_setting(self, x: float) -> Any:
        """The value as the file or option takes it (a unit string where the file has one)."""
        if self.integer:
            return int(round(x))
        if not self.unit:
            return float(f"{x:.6g}")
        return f"{x / _unit_factor(self.unit):.6g} {self.unit}"


def _unit_factor(unit: str) -> float:
    for table in units.KINDS.values():
        if unit in table:
            return table[unit]
    raise KeyError(unit)


def _split_quantity(text: str) -> tuple[float, str]:
    """``"105 us"`` -> (1.05e-4, "us"); ``"0.34"`` -> (0.34, "")."""
    m = re.match(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(\S*)\s*$", str(text))
    if not m:
        raise ValueError(text)
    number, unit = float(m.group(1)), m.group(2)
    return (number * _unit_factor(unit) if unit else number), unit


def parse_bounds(comment: str, where: str | Path | None = None, key: str | None = None) -> tuple[float, float] | None:
    """``(lo, hi)`` in SI units from a ``bounds: LO..HI`` note, None when there is none."""
    m = _BOUNDS.search(comment)
    if not m:
        return None
    try:
        lo, lo_unit = _split_quantity(m.group(1))
        hi, hi_unit = _split_quantity(m.group(2))
    except (ValueError, KeyError):
        raise InputError(where, key, "bounds: LO..HI with two numbers (in the value's units, e.g. 60 us..200 us)", m.group(0)) from None
    if bool(lo_unit) != bool(hi_unit):  # "60 us..200" is not 60 us..200 s
        raise InputError(where, key, "bounds with a unit on both sides or on neither (e.g. 60 us..200 us)", m.group(0))
    if not lo < hi:
        raise InputError(where, key, "bounds: LO..HI with LO below HI", m.group(0))
    return lo, hi


def free_constants(device: str = "oneplus12") -> list[FreeConstant]:
    """The free set: the device file's and the policies' constants marked ``fitted to`` with
    ``bounds:`` (see module docstring)."""
    from .. import policies
    from ..schema import describe_fields, field_spec
    from ..specs.provenance import fitted

    path = resources.resolve("devices", device, what="--device")
    out: list[FreeConstant] = []
    for item in fitted(path):
        b = parse_bounds(item.comment, path, item.key)
        if b is None:
            continue
        value, unit = _split_quantity(item.value)
        if not b[0] <= value <= b[1]:
            raise InputError(path, item.key, f"a value inside its declared bounds {item.comment[item.comment.find('bounds'):]}", item.value)
        out.append(FreeConstant("device", item.key, value, b[0], b[1], unit, False, f"{path.name}:{item.line}", item.comment))
    for name in policies.names():
        cls = policies.get(name)
        for key, kind, default, help_ in describe_fields(cls.Options):
            if "fitted to" not in help_:
                continue
            b = parse_bounds(help_, f"policy {name}", key)
            if b is None:
                continue
            raw = getattr(cls.Options(), key)
            if not b[0] <= float(raw) <= b[1]:
                raise InputError(f"policy {name}", key, f"a default inside its declared bounds {help_[help_.find('bounds'):].split(';')[0].rstrip(')')}", raw)
            fld = {f.name: f for f in dataclasses.fields(cls.Options)}[key]
            integer = fld.type in (int, "int")
            kind = field_spec(fld).unit
            unit = "" if kind in (None, "fraction") else next(u for u, fac in units.KINDS[kind].items() if fac == 1.0 and u)
            out.append(FreeConstant(f"policy:{name}", key, float(raw), b[0], b[1], unit, integer, f"policy {name}", help_))
    return out


# ----------------------------------------------------------------------------- evaluation


def settings(free: list[FreeConstant], x: list[float]) -> dict[str, dict[str, Any]]:
    """{"device": {key: value}, "policy": {name: {option: value}}} for values ``x``."""
    dev: dict[str, Any] = {}
    pol: dict[str, dict[str, Any]] = {}
    for c, v in zip(free, x):
        if c.scope == "device":
            dev[c.key] = c.as_setting(v)
        else:
            pol.setdefault(c.scope.split(":", 1)[1], {})[c.key] = c.as_setting(v)
    return {"device": dev, "policy": pol}


def apply_settings(cfg, values: dict[str, dict[str, Any]], device_name: str):
    """A RunConfig with calibrated values applied: device values when the run is on that device,
    policy options for runs of that policy that do not set the option themselves."""
    from ..specs.device import load_device

    dev_over = dict(cfg.device_overrides)
    if values.get("device") and load_device(cfg.device).name == device_name:
        for k, v in values["device"].items():
            dev_over.setdefault(k, v)
    options = dict(cfg.options)
    for k, v in (values.get("policy") or {}).get(cfg.policy, {}).items():
        options.setdefault(k, v)
    return replace(cfg, device_overrides=dev_over, options=options)


@dataclass
class Evaluation:
    residuals: list[float]  # log(simulated / measured) per scenario; refused: REFUSED_RESIDUAL
    simulated: list[float]


class Evaluator:
    """Runs a fixed list of scenarios for given constant values (memoised on the values)."""

    def __init__(self, scenarios, free: list[FreeConstant], device: str, fast: bool = True, fidelity: str = "analytic"):
        from ..specs.device import load_device

        self.scenarios = [s for s in scenarios if s.kind == "run"]
        self.free = free
        self.device = load_device(device).name  # runs on this device (by name or path) get its constants
        self.fast, self.fidelity = fast, fidelity
        self._cache: dict[tuple, Evaluation] = {}
        self.calls = 0

    def __call__(self, x) -> Evaluation:
        from .validate import run_scenarios

        key = tuple(round(float(v), 12) for v in x)
        if key in self._cache:
            return self._cache[key]
        self.calls += 1
        values = settings(self.free, list(x))
        outcomes = run_scenarios(self.scenarios, self.fast, self.fidelity, prepare=lambda cfg: apply_settings(cfg, values, self.device))
        res = [REFUSED_RESIDUAL if o.refused is not None else math.log(max(o.simulated, 1e-12) / o.scenario.paper) for o in outcomes]
        sim = [o.simulated for o in outcomes]
        out = Evaluation(res, sim)
        self._cache[key] = out
        return out


@dataclass
class Fit:
    free: list[FreeConstant]
    x: list[float]
    start: list[float]
    before: Evaluation
    after: Evaluation
    scenario_ids: list[str]
    evaluations: int
    message: str
    unseen: list[str] = field(default_factory=list)  # constants no point of the fit moved (zero Jacobian column)

    def values(self) -> dict[str, float]:
        return {c.name: v for c, v in zip(self.free, self.x)}


def require_scipy() -> None:
    import importlib.util

    if importlib.util.find_spec("scipy") is None:
        raise InputError(None, "pi2sim calibrate", "scipy for the least-squares fit: pip install 'pi2sim[calibrate]'")


def _fit_continuous(ev: Evaluator, free: list[FreeConstant], x0: list[float], fixed: dict[int, float], max_evals: int):
    import numpy as np
    from scipy.optimize import least_squares

    idx = [i for i, c in enumerate(free) if i not in fixed]

    def full(z):
        x = list(x0)
        for i, v in fixed.items():
            x[i] = v
        for j, i in enumerate(idx):
            x[i] = math.exp(z[j])
        return x

    if not idx:
        x = full([])
        return x, ev(x), "nothing continuous to fit", set()
    lo = np.log([free[i].lo for i in idx])
    hi = np.log([free[i].hi for i in idx])
    z0 = np.clip(np.log([x0[i] for i in idx]), lo, hi)
    sol = least_squares(lambda z: np.asarray(ev(full(z)).residuals), z0, bounds=(lo, hi), method="trf", diff_step=1e-3,
                        x_scale=1.0, max_nfev=max_evals, xtol=1e-4, ftol=1e-6, loss=LOSS, f_scale=LOSS_SCALE)
    x = full(sol.x)
    # a constant whose Jacobian column is zero moved no residual of these points: they cannot identify it
    unseen = {idx[j] for j in range(len(idx)) if not np.any(np.abs(sol.jac[:, j]) > 1e-12)}
    return x, ev(x), sol.message, unseen


REFERENCE_POLICY = "powerinfer2"


def stages(scenarios, free: list[FreeConstant]) -> list[tuple[list, list[FreeConstant]]]:
    """The fit's stages: (scenarios, constants) pairs, fitted in order.

    The phone's constants (the device file's) and the reference engine's are fitted first, to the
    reference engine's points alone; then each other engine's own constants to its own points,
    with the phone's held. A baseline is a port whose mechanisms are partly guesses (docs/
    validation.md, known gaps): its structural misses must not move what the phone is. Without
    reference points (your own phone measured with llama.cpp only) the device constants are
    fitted together with the engines' in one stage."""
    def policy_of(sc):
        return (sc.run or {}).get("policy", REFERENCE_POLICY)

    ref = [sc for sc in scenarios if policy_of(sc) == REFERENCE_POLICY]
    if not ref:
        return [(list(scenarios), list(free))]
    out = [(ref, [c for c in free if c.scope in ("device", f"policy:{REFERENCE_POLICY}")])]
    for name in sorted({policy_of(sc) for sc in scenarios} - {REFERENCE_POLICY}):
        own = [c for c in free if c.scope == f"policy:{name}"]
        if own:
            out.append(([sc for sc in scenarios if policy_of(sc) == name], own))
    return out


def fit(scenarios, device: str = "oneplus12", free: list[FreeConstant] | None = None, fast: bool = True, fidelity: str = "analytic",
        max_evals: int = 60, start: list[float] | None = None, progress: bool = False) -> Fit:
    """Least-squares fit of the free constants to the scenarios, stage by stage (:func:`stages`;
    see the module docstring)."""
    require_scipy()
    free = free if free is not None else free_constants(device)
    scenarios = [s for s in scenarios if s.kind == "run"]
    if not scenarios:
        raise InputError(None, "--scenarios", "at least one scenario of kind: run to fit to")
    if not free:
        raise InputError(None, "free constants", "at least one constant marked 'fitted to' with 'bounds: LO..HI' in the device file or a policy")
    # only the constants some scenario can see: a policy's options matter only to its runs
    used_policies = {(s.run or {}).get("policy", REFERENCE_POLICY) for s in scenarios}
    free = [c for c in free if c.scope == "device" or c.scope.split(":", 1)[1] in used_policies]
    everything = Evaluator(scenarios, free, device, fast, fidelity)
    x0 = list(start) if start is not None else [c.value for c in free]
    x = list(x0)
    before = everything(x0)
    calls, messages, unseen = 0, [], set()
    staged = set()
    for stage_scenarios, stage_free in stages(scenarios, free):
        idx = [free.index(c) for c in stage_free]
        staged |= set(idx)
        ev = Evaluator(stage_scenarios, free, device, fast, fidelity)
        hold = {i: x[i] for i in range(len(free)) if i not in idx}  # earlier stages' results, later stages' starts
        x, msg, stage_unseen = _fit_stage(ev, free, x, hold, max_evals, progress)
        unseen |= stage_unseen
        calls += ev.calls
        messages.append(msg)
    unseen |= set(range(len(free))) - staged  # in no stage: no scenario of its engine
    after = everything(x)
    return Fit(free, x, x0, before, after, [s.id for s in everything.scenarios], calls + everything.calls, "; ".join(dict.fromkeys(messages)),
               sorted(free[i].name for i in unseen if not free[i].integer))


def _fit_stage(ev: Evaluator, free: list[FreeConstant], x0: list[float], hold: dict[int, float], max_evals: int,
               progress: bool) -> tuple[list[float], str]:
    """Fit the constants not in ``hold`` to ``ev``'s scenarios: reals by least squares, integers by
    coordinate search over their bounds (then the reals again if an integer moved)."""
    ints = [i for i, c in enumerate(free) if c.integer and i not in hold]
    fixed = dict(hold)
    fixed.update({i: float(round(x0[i])) for i in ints})
    x, e, msg, unseen = _fit_continuous(ev, free, x0, fixed, max_evals)
    changed = False
    for i in ints:
        best = (_cost(e), fixed[i])
        for v in range(int(free[i].lo), int(free[i].hi) + 1):
            trial = list(x)
            trial[i] = float(v)
            c = _cost(ev(trial))
            if c < best[0] - 1e-12:
                best = (c, float(v))
        if best[1] != fixed[i]:
            fixed[i] = best[1]
            x[i] = best[1]
            changed = True
        if progress:
            import sys

            print(f"[calibrate] {free[i].name} = {int(fixed[i])} ({ev.calls} evaluations)", file=sys.stderr, flush=True)
    if changed:
        x, e, msg, unseen = _fit_continuous(ev, free, x, fixed, max_evals)
    return x, str(msg), unseen


def _cost(e: Evaluation) -> float:
    """The robust loss least_squares minimises (soft_l1 at scale LOSS_SCALE)."""
    c = LOSS_SCALE
    return sum(2 * c * c * (math.sqrt(1 + (r / c) ** 2) - 1) for r in e.residuals)


# ----------------------------------------------------------------------------- overlay


def overlay_dict(f: Fit, device: str, scenario_source: str) -> dict:
    from ..specs.device import load_device

    dev = load_device(device)
    values = settings(f.free, f.x)
    body = json.dumps(values, sort_keys=True, default=str)
    return {
        "calibration": {
            "pi2sim_version": __version__,
            "device": dev.name,
            "device_file_sha256": hashlib.sha256(Path(dev.path).read_bytes()).hexdigest()[:16],
            "scenarios": scenario_source,
            "points": len(f.scenario_ids),
            "config_hash": hashlib.sha256(body.encode()).hexdigest()[:16],
            "optimizer": f"scipy.optimize.least_squares (trf, log space, {LOSS} loss at {LOSS_SCALE:g}); integers searched over their bounds; {f.evaluations} evaluations: {f.message}",
            "median_abs_error_pct_before": round(100 * median_abs_error(f.before.residuals), 3),
            "median_abs_error_pct_after": round(100 * median_abs_error(f.after.residuals), 3),
            "residuals_pct": {sid: {"before": _pct(b), "after": _pct(a)} for sid, b, a in zip(f.scenario_ids, f.before.residuals, f.after.residuals)},
            "constants": {c.name: {"start": c.as_setting(s), "bounds": [c.as_setting(c.lo), c.as_setting(c.hi)], "declared_in": c.where}
                          for c, s in zip(f.free, f.start)},
        },
        "device": values["device"],
        "policy": values["policy"],
    }


def _pct(r: float) -> float:
    return round(100 * (math.exp(r) - 1), 3)


def median_abs_error(res: list[float]) -> float:
    """Median |relative error| of log residuals."""
    return statistics.median(abs(math.exp(r) - 1) for r in res) if res else 0.0


def write_overlay(path: str | Path, data: dict) -> None:
    import yaml

    from ..atomic import write_text

    header = "# pi2sim calibration overlay: fitted constants with their provenance (pi2sim calibrate).\n# Apply with: pi2sim run --calibration THIS_FILE\n"
    write_text(Path(path), header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def load_overlay(path: str | Path) -> dict:
    """Read and check an overlay (one-line errors for anything malformed)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(None, "--calibration", "an overlay YAML written by pi2sim calibrate", str(path))
    data = yamlio.load(p)
    if not isinstance(data, dict) or "calibration" not in data:
        raise InputError(p, None, "a calibration overlay (keys calibration, device, policy)")
    for k in data:
        if k not in ("calibration", "device", "policy"):
            raise InputError(p, k, "unknown key (an overlay has calibration, device and policy)")
    dev = data.get("device") or {}
    pol = data.get("policy") or {}
    if not isinstance(dev, dict) or not all(isinstance(k, str) for k in dev):
        raise InputError(p, "device", "a mapping of device YAML key paths to values")
    if not isinstance(pol, dict) or not all(isinstance(v, dict) for v in pol.values()):
        raise InputError(p, "policy", "a mapping of policy names to their option values")
    from .. import policies

    for name in pol:
        if name not in policies.names():
            raise InputError(p, f"policy.{name}", f"a policy ({', '.join(policies.names())})")
    cal = data["calibration"]
    if not isinstance(cal, dict) or not isinstance(cal.get("device"), str):
        raise InputError(p, "calibration.device", "the name of the device the constants were fitted on")
    for k in ("config_hash", "device_file_sha256", "constants"):
        if k not in cal:
            raise InputError(p, f"calibration.{k}", "present (an overlay written by pi2sim calibrate; this one is truncated or hand-made)")
    # the values are the ones the fit wrote: a truncated or edited overlay does not hash to its config_hash
    body = json.dumps({"device": dev, "policy": pol}, sort_keys=True, default=str)
    if hashlib.sha256(body.encode()).hexdigest()[:16] != str(cal["config_hash"]):
        raise InputError(p, "calibration.config_hash", "the hash of the overlay's device and policy values (the file was truncated or edited: refit with pi2sim calibrate)")
    return {"device_name": cal["device"], "device": dev, "policy": pol, "path": str(p), "device_file_sha256": str(cal["device_file_sha256"])}


def check_overlay(overlay: dict, device: str | None = None, allow_stale: bool = False) -> None:
    """An overlay against what it claims: every constant in the free set of its device and
    policies, inside its declared bounds, and the device file (``device``: the run's, by name or
    path; else the overlay's device by name) unchanged since the fit (``allow_stale`` accepts a
    changed one, on the user's word)."""
    from ..specs.device import load_device

    path = overlay["path"]
    dev = load_device(device or overlay["device_name"])
    if dev.name != overlay["device_name"]:
        return  # another phone: apply_overlay refuses device constants for it, and policy constants have no device to check
    sha = hashlib.sha256(Path(dev.path).read_bytes()).hexdigest()[:16]
    if sha != overlay["device_file_sha256"] and not allow_stale:
        raise InputError(path, "calibration.device_file_sha256",
                         f"the hash of {dev.path} as it was fitted ({overlay['device_file_sha256']}; it is {sha} now): refit with "
                         f"pi2sim calibrate --device {dev.name}, or pass --allow-stale-calibration to apply it anyway")
    free = {(c.scope, c.key): c for c in free_constants(dev.path)}
    items = [(("device", k), f"device.{k}", v) for k, v in overlay["device"].items()]
    items += [((f"policy:{name}", k), f"policy.{name}.{k}", v) for name, opts in overlay["policy"].items() for k, v in opts.items()]
    for ident, where, value in items:
        c = free.get(ident)
        if c is None:
            names = sorted(f"{s.split(':', 1)[-1]}.{k}" if s != "device" else k for s, k in free)
            raise InputError(path, where, f"a constant of the free set ({', '.join(names)})")
        try:
            x, unit = _split_quantity(str(value)) if isinstance(value, str) else (float(value), "")
        except (ValueError, KeyError):
            raise InputError(path, where, f"a value in {c.unit or 'plain numbers'}", value) from None
        if not c.lo * (1 - 1e-9) <= x <= c.hi * (1 + 1e-9):
            raise InputError(path, where, f"a value inside the constant's bounds {c.as_setting(c.lo)}..{c.as_setting(c.hi)}", value)


def apply_overlay(cfg, overlay: dict, strict: bool = True):
    """Apply an overlay to a RunConfig (explicit --set values win). ``strict``: a run on another
    device than the one the constants were fitted on is refused rather than silently left
    uncalibrated (validate passes False: its points on other phones keep their own constants)."""
    from .. import policies
    from ..specs.device import load_device

    for name, opts in overlay["policy"].items():
        if name not in policies.names():
            raise InputError(overlay["path"], f"policy.{name}", f"a policy ({', '.join(policies.names())})")
    if strict and overlay["device"]:
        run_device = load_device(cfg.device).name
        if run_device != overlay["device_name"]:
            raise InputError(overlay["path"], "calibration.device",
                             f"the device of the run ({run_device}): these constants were fitted on another phone", overlay["device_name"])
    if strict and not overlay["device"] and policies.split_spec(cfg.policy)[0] not in overlay["policy"]:
        raise InputError(overlay["path"], "policy", f"constants of the run's engine ({cfg.policy}): this overlay has none for it "
                         f"({', '.join(overlay['policy']) or 'nothing'}), so it would change nothing")
    return apply_settings(cfg, overlay, overlay["device_name"])


# ----------------------------------------------------------------------------- cross-validation


@dataclass
class CrossResult:
    groups: list[str]
    rows: list[dict]  # per scenario: id, group, fitted error %, predictive error %
    folds: dict[str, dict[str, float]]  # group left out -> constant -> value
    full: Fit
    spreads: dict[str, float] = field(default_factory=dict)  # constant -> (max - min) / median across folds


def scenario_device(s) -> str:
    """The device a scenario runs on (its file's name; the default phone when it names none)."""
    from ..config import RunConfig
    from ..specs.device import load_device

    return load_device((s.run or {}).get("device") or RunConfig.__dataclass_fields__["device"].default).name


def cross_validate(scenarios, device: str = "oneplus12", fast: bool = True, fidelity: str = "analytic", max_evals: int = 40,
                   progress: bool = False, by: str = "figure") -> CrossResult:
    """Leave one group out at a time: refit on the rest, predict it. ``by``: ``figure`` (a figure
    of the paper) or ``device`` (a phone: every point measured on it)."""
    if by not in ("figure", "device"):
        raise InputError(None, "--by", "figure or device", by)
    scenarios = [s for s in scenarios if s.kind == "run"]
    key = {s.id: (s.figure if by == "figure" else scenario_device(s)) for s in scenarios}
    if len(set(key.values())) < 2:
        raise InputError(None, "--cross", f"scenarios of at least two {'figures' if by == 'figure' else 'phones'} (each fold refits on the others; "
                         f"these {len(scenarios)} run points have {len(set(key.values()))})")
    full = fit(scenarios, device, fast=fast, fidelity=fidelity, max_evals=max_evals, progress=False)
    fitted_err = {sid: math.exp(r) - 1 for sid, r in zip(full.scenario_ids, full.after.residuals)}
    groups = sorted(set(key.values()))
    rows, folds = [], {}
    for g in groups:
        train = [s for s in scenarios if key[s.id] != g]
        test = [s for s in scenarios if key[s.id] == g]
        if not train:
            continue
        f = fit(train, device, free=list(full.free), fast=fast, fidelity=fidelity, max_evals=max_evals)
        # constants no training point sees (a policy only the held-out group runs, or an option
        # only its runs use) cannot be predicted: they take their declared prior, or else keep the
        # value declared in the file, which was fitted with this group (the row says which)
        unseen = [c.name for c in full.free if c.name not in f.values() or c.name in f.unseen]
        folds[g] = {k: v for k, v in f.values().items() if k not in unseen}
        x = list(f.x)
        for i, c in enumerate(f.free):
            if c.name in unseen and c.prior is not None:
                x[i] = c.prior
        pred = Evaluator(test, f.free, device, fast, fidelity)(x)
        for s, r in zip(test, pred.residuals):
            rows.append({"id": s.id, "group": g, "fitted_error_pct": 100 * fitted_err.get(s.id, math.nan),
                         "predictive_error_pct": 100 * (math.exp(r) - 1), "unidentified": ",".join(unseen)})
        if progress:
            import sys

            print(f"[cross] left out {g}: " + ", ".join(f"{k}={v:.4g}" for k, v in f.values().items()), file=sys.stderr, flush=True)
    spreads = {}
    for c in full.free:
        vals = [folds[g][c.name] for g in folds if c.name in folds[g]]
        if vals:
            med = statistics.median(vals)
            spreads[c.name] = (max(vals) - min(vals)) / med if med else math.inf
    return CrossResult(groups, rows, folds, full, spreads)
