"""A phone from its spec sheet: the rules that turn a SoC, its RAM and its storage into a device.

Every number of a generated device file (``pi2sim device new``) comes from one rule here, stated
once, with its source; the catalogue (``devices/catalogue/socs.yaml``, ``cores.yaml``) holds the
hardware facts the rules take. The reference phone is the OnePlus 12 (``devices/oneplus12.yaml``):
its values were measured or fitted (PowerInfer-2's microbenchmarks, T13), and the rules carry
them to other phones by ratios, so a refit of the reference moves every generated phone with it.

The rules and their uncertainty (docs/devices.md has the table and the checks):

* **core rates** (:func:`core_rates`): per-cycle INT4 matvec, INT4 GEMM and memcpy rates of the
  reference A720 times the core type's ``per_clock`` times its clock; FP16 matvec 2.5x INT4 and
  FP16 GEMM = INT4 GEMM (the reference's assumptions). +-15% for big cores, +-10% mid, +-25% little.
* **DRAM** (:func:`dram_rates`): theoretical = transfer rate x bus width; what the CPU, the NPU,
  both and the GPU reach = the reference's achieved/theoretical ratios (57%, 73%, 78%, 82%).
* **UFS** (:func:`ufs_params`): 4.0 and 4.1 the reference's measured parameters; 3.0/3.1 half its
  large-block rates (2100 vs 4200 MB/s read specs), 450 MB/s 4 KB random reads within 128 MB,
  1.25x its latency; the per-request CPU cost scaled by the issuing core's speed.
* **app memory** (:func:`app_memory`): what one app may use, by RAM size.
* **NPU** (:func:`npu_params`): a Hexagon NPU's GEMM rate is the reference's times the SoC's
  generational factor; its matvec streams at the phone's NPU DRAM rate; the QNN runtime's costs
  are the reference's. Other NPUs: no section (no modelled engine runs on them).
* **GPU** (:func:`gpu_params`): the reference's GEMM rate scaled by peak FP32, its matvec at the
  reference's share of the GPU's DRAM rate, usable memory in proportion to RAM.
* **power and heat** (:func:`power_section`, :func:`thermal_section`): each core's active power
  is the reference power of its class, scaled by per-clock throughput and by the clock cubed;
  DRAM, UFS, platform and thermal values are the reference's; the battery is the phone's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .. import resources, units, yamlio
from ..errors import InputError

REFERENCE = "oneplus12"  # the measured phone the rules carry to others
REFERENCE_CORE = "cortex-a720"  # the reference's cluster whose per-cycle rates the core table is relative to
RULES = "pi2sim/specs/rules.py"


def catalogue_dir() -> Path:
    return resources.data_dir("devices") / "catalogue"


# ----------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class CoreType:
    name: str
    designer: str
    core_class: str  # big / mid / little
    simd_pipes: int
    per_clock: float  # SIMD integer throughput per cycle relative to the reference A720
    i8mm: bool


@dataclass(frozen=True)
class ClusterSpec:
    core: str
    count: int
    clock_hz: float


@dataclass(frozen=True)
class Soc:
    name: str
    vendor: str
    clusters: tuple[ClusterSpec, ...]
    dram_type: str
    dram_rate: float  # transfers per second
    bus_bits: int
    storage: str
    npu_kind: str
    npu_gemm_vs_8gen3: float | None
    gpu_name: str | None
    gpu_fp32: float | None  # FLOP/s
    cpu_dram_limit: float | None = None  # what the CPU complex reaches, where measured on a phone with this CPU complex


@lru_cache(maxsize=1)
def core_types() -> dict[str, CoreType]:
    path = catalogue_dir() / "cores.yaml"
    data = yamlio.load(path)
    out = {}
    for name, c in (data.get("cores") or {}).items():
        try:
            out[name] = CoreType(name, str(c["designer"]), str(c["class"]), int(c["simd_pipes"]), float(c["per_clock"]), bool(c["i8mm"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"cores.{name}", f"designer, class, simd_pipes, per_clock and i8mm ({exc})") from None
    return out


@lru_cache(maxsize=1)
def socs() -> dict[str, Soc]:
    path = catalogue_dir() / "socs.yaml"
    data = yamlio.load(path)
    out = {}
    for name, s in (data.get("socs") or {}).items():
        try:
            clusters = tuple(ClusterSpec(str(c["core"]), int(c["count"]), units.parse(c["clock"], "frequency")) for c in s["clusters"])
            rate = _transfer_rate(s["dram"]["rate"])
            npu = s.get("npu") or {}
            gpu = s.get("gpu") or {}
            out[name] = Soc(name, str(s["vendor"]), clusters, str(s["dram"]["type"]), rate, int(s["dram"]["bus_bits"]), str(s["storage"]),
                            str(npu.get("kind", "other")), float(npu["gemm_vs_8gen3"]) if "gemm_vs_8gen3" in npu else None,
                            gpu.get("name"), float(gpu["fp32_tflops"]) * 1e12 if "fp32_tflops" in gpu else None,
                            units.parse(s["cpu_dram_limit"], "bandwidth") if "cpu_dram_limit" in s else None)
        except (KeyError, TypeError, ValueError, units.UnitError) as exc:
            raise InputError(path, f"socs.{name}", f"clusters, dram (type, rate, bus_bits), storage, npu, gpu ({exc})") from None
        for c in clusters:
            if c.core not in core_types():
                raise InputError(path, f"socs.{name}.clusters", f"a core of devices/catalogue/cores.yaml ({', '.join(core_types())})", c.core)
    return out


def _transfer_rate(text) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*MT/s\s*", str(text))
    if not m:
        raise ValueError(f"a transfer rate like '8533 MT/s', got {text!r}")
    return float(m.group(1)) * 1e6


_CLUSTER = re.compile(r"^\s*(\d+)\s*x\s*([a-z0-9-]+)\s*@\s*(\d+(?:\.\d+)?)\s*(GHz|MHz)\s*$")


def parse_clusters(text: str) -> tuple[ClusterSpec, ...]:
    """``"1x cortex-x3@3.36GHz,2x cortex-a715@2.8GHz"`` -> clusters, fastest first as written."""
    out = []
    for part in [p for p in text.split(",") if p.strip()]:
        m = _CLUSTER.match(part)
        if not m:
            raise InputError(None, "--clusters", "clusters like '1x cortex-x3@3.36GHz,2x cortex-a715@2.8GHz'", part.strip())
        count, core, clock, unit = int(m.group(1)), m.group(2), float(m.group(3)), m.group(4)
        if core not in core_types():
            raise InputError(None, "--clusters", f"a core type of devices/catalogue/cores.yaml ({', '.join(sorted(core_types()))})", core)
        if not 1 <= count <= 16:
            raise InputError(None, "--clusters", "1 to 16 cores per cluster", count)
        hz = clock * (1e9 if unit == "GHz" else 1e6)
        if not 0.3e9 <= hz <= 6e9:
            raise InputError(None, "--clusters", "a clock between 0.3 and 6 GHz", part.strip())
        out.append(ClusterSpec(core, count, hz))
    if not out:
        raise InputError(None, "--clusters", "at least one cluster", text)
    return tuple(out)


# ----------------------------------------------------------------------------- the reference


@lru_cache(maxsize=1)
def reference():
    from .device import load_device

    return load_device(REFERENCE)


def _ref_a720():
    """The reference core's cluster at its highest clock (OnePlus 12 perf_hi, A720 @ 3.2 GHz)."""
    return max((c for c in reference().cpu.clusters if c.core == REFERENCE_CORE), key=lambda c: c.clock_hz)


# ----------------------------------------------------------------------------- the rules


def core_speed(core: CoreType, clock_hz: float) -> float:
    """A core's SIMD integer throughput in reference-A720 cycles per second (per_clock x clock)."""
    return core.per_clock * clock_hz


def core_rates(core: CoreType, clock_hz: float) -> dict[str, float]:
    """Kernel rates of one core (SI): the reference A720's per-cycle rates x ``per_clock`` x clock."""
    ref = _ref_a720()
    k = core.per_clock * clock_hz / ref.clock_hz
    # memcpy is not a SIMD kernel: the reference core of the same class, scaled by per_clock and clock
    mc, mc_core = _ref_class_cluster(core.core_class)
    km = (core.per_clock / core_types()[mc_core].per_clock) * clock_hz / mc.clock_hz
    return {
        "matvec_int4": ref.matvec_int4_bps * k,
        "matvec_fp16": ref.matvec_fp16_bps * k,
        "gemm_int4": ref.gemm_int4_ops * k,
        "gemm_fp16": ref.gemm_fp16_ops * k,
        "memcpy": mc.memcpy_bps * km,
    }


CLASS_REFERENCE = {"big": "cortex-x4", "mid": "cortex-a720", "little": "cortex-a520"}  # the reference's core of each class


def _ref_class_cluster(core_class: str):
    """The reference's fastest cluster of a core class, and its core type."""
    core = CLASS_REFERENCE[core_class]
    return max((c for c in reference().cpu.clusters if c.core == core), key=lambda c: c.clock_hz), core


def per_cycle_table() -> list[dict]:
    """The core table in per-cycle units (what ``pi2sim device cores`` prints)."""
    rows = []
    for c in core_types().values():
        r = core_rates(c, 1.0)
        rows.append({"core": c.name, "class": c.core_class, "designer": c.designer, "simd_pipes": c.simd_pipes, "per_clock": c.per_clock,
                     "matvec_int4_B_per_cycle": r["matvec_int4"], "gemm_int4_ops_per_cycle": r["gemm_int4"],
                     "gemm_i8mm_ops_per_cycle": r["gemm_int4"] * reference().cpu.i8mm_gemm_speedup, "memcpy_B_per_cycle": r["memcpy"]})
    return rows


def dram_theoretical(rate: float, bus_bits: int) -> float:
    """Transfers per second x bus width in bytes."""
    return rate * bus_bits / 8


def dram_rates(theoretical: float) -> dict[str, float]:
    """What each agent reaches: the reference's achieved/theoretical ratios (PI2 §2.3.1 CPU 43.9,
    NPU 56, both 59.6 of 76.8 GB/s; clpeak on the Adreno 750, 63 GB/s, arXiv 2410.03613)."""
    r = reference().dram
    return {k: theoretical * getattr(r, f"{k}_bps") / r.bw_theoretical_bps for k in ("bw_cpu", "bw_npu", "bw_cpu_npu", "bw_gpu")}


# (RAM, what one app may use): PowerInfer-2 v3 Table 3 (24 GB OnePlus 12: 19 GB; 16 GB Ace 2: 11 GB);
# 8 GB phones: half the RAM (the Termux maintainers' rule "no more than 50%", github.com/termux/termux-app
# issue 1789; "~4 GB of 8 GB available" while a 7B app crashed on a Galaxy S23, pytorch/executorch issue 3599)
APP_MEMORY_POINTS = ((4e9, 2e9), (8e9, 4e9), (16e9, 11e9), (24e9, 19e9))


def app_memory(ram_bytes: float) -> float:
    """Memory one app may use: half the RAM up to 8 GB, then linear through 16 GB -> 11 GB and
    24 GB -> 19 GB (RAM - 5 GB above). 12 GB gives 7.5 GB (interpolated, unmeasured: +-1 GB)."""
    pts = APP_MEMORY_POINTS
    if ram_bytes <= pts[0][0]:
        return ram_bytes / 2
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if ram_bytes <= x1:
            return y0 + (y1 - y0) * (ram_bytes - x0) / (x1 - x0)
    return ram_bytes - 5e9


UFS_GENERATIONS = ("ufs3.0", "ufs3.1", "ufs4.0", "ufs4.1")


def ufs_params(gen: str, issue_speed: dict[str, float]) -> dict[str, tuple[float, str]]:
    """UFS device parameters by generation, each with its provenance. ``issue_speed``: the speed
    (:func:`core_speed`) of this phone's big, mid and little issuing cores."""
    if gen not in UFS_GENERATIONS:
        raise InputError(None, "--storage", f"one of {', '.join(UFS_GENERATIONS)}", gen)
    s = reference().storage
    out: dict[str, tuple[float, str]] = {}
    ref_speed = _ref_issue_speed()
    for cls in ("big", "mid", "little"):
        k = ref_speed[cls] / issue_speed[cls]
        out[f"issue_cost.{cls}"] = (s.issue_cost.of(cls) * k, f"derived: {REFERENCE} {s.issue_cost.of(cls) * 1e6:.3f} us x {k:.3f} (issuing-core speed ratio, {RULES} ufs_params)")
    if gen in ("ufs4.0", "ufs4.1"):
        tag = f"derived: {REFERENCE}'s value (fitted to T13 there; {RULES} ufs_params: same UFS 4.x interface, 4.1's +15% random read not counted)"
        for key, attr in (("request_service", "request_service_s"), ("bw_random", "bw_random_bps"), ("bw_sequential", "bw_sequential_bps"),
                          ("latency", "latency_s"), ("span_exponent", "span_exponent")):
            out[key] = (getattr(s, attr), tag)
    else:
        half = 2100 / 4200  # UFS 3.1 / 4.0 sequential read specs (Samsung, liliputing.com 2020; neowin.net 2022)
        out["bw_random"] = (s.bw_random_bps * half, f"derived: {REFERENCE} x 2100/4200 (UFS 3.1 / 4.0 sequential read specs; {RULES} ufs_params)")
        out["bw_sequential"] = (s.bw_sequential_bps * half, f"derived: {REFERENCE} x 2100/4200 (as bw_random)")
        # 4 KB random reads at 450 MB/s within 128 MB: 9.1 us per read minus the transfer at bw_random
        out["request_service"] = (4096 / 450e6 - 4096 / (s.bw_random_bps * half), f"assumption: 4 KB random reads at 450 MB/s within 128 MB ({RULES} ufs_params; no UFS 3.1 queue-depth measurement published)")
        out["latency"] = (s.latency_s * 1.25, f"assumption: older NAND and controller, 1.25x {REFERENCE}'s (fitted there) ({RULES} ufs_params)")
        out["span_exponent"] = (s.span_exponent, f"assumption: {REFERENCE}'s span sensitivity (fitted to T13 there)")
    return out


def issue_speeds(clusters: list[tuple[float, str]]) -> dict[str, float]:
    """From (core speed, class) of each cluster: the speed of the core that pays a class's
    per-request cost, the slowest core of that class (on the reference, PI2 Table 1's 3 GHz mid
    core); a class the phone lacks takes the nearest class it has (mid, then big, then little)."""
    out: dict[str, float] = {}
    for speed, cls in clusters:
        out[cls] = min(out.get(cls, speed), speed)
    for cls in ("big", "mid", "little"):
        if cls not in out:
            out[cls] = out.get("mid") or out.get("big") or out.get("little")
    return out


def _ref_issue_speed() -> dict[str, float]:
    ct = core_types()
    return issue_speeds([(core_speed(ct[c.core], c.clock_hz), c.core_class) for c in reference().cpu.clusters])


def npu_params(soc: Soc, bw_npu: float) -> dict[str, tuple[float, str]] | None:
    """A Hexagon NPU (the only kind a modelled engine runs on), or None."""
    if soc.npu_kind != "hexagon" or soc.npu_gemm_vs_8gen3 is None:
        return None
    n = reference().npu
    same = f"derived: {REFERENCE}'s value ({RULES} npu_params: the same QNN runtime)"
    return {
        "gemm": (n.gemm_ops * soc.npu_gemm_vs_8gen3, f"derived: {REFERENCE} {n.gemm_ops / 1e12:.3g} TOPS x {soc.npu_gemm_vs_8gen3} (the SoC's Hexagon generation, devices/catalogue/socs.yaml)"),
        "matvec": (bw_npu, f"derived: the NPU-alone DRAM rate below ({RULES} npu_params: on {REFERENCE} the NPU streams at its DRAM limit)"),
        "invocation": (n.invocation_s, same), "sync": (n.sync_s, same), "graph_switch": (n.graph_switch_s, same),
        "graph_tokens": (n.graph_tokens, same), "mixed_precision_factor": (n.mixed_precision_factor, same), "fp16_slowdown": (n.fp16_slowdown, same),
    }


REF_GPU_FP32 = 3.07e12  # Adreno 750 peak FP32 at 1 GHz (github.com/azhirnov/cpu-gpu-arch gpu/Adreno-700.md)
GPU_DRAM_SHARE = {"adreno": 63 / 76.8, "mali": 48 / 76.8}  # clpeak: Adreno 750 63 GB/s, Mali-G720 MC12 48 GB/s of 76.8 (arXiv 2410.03613 Table IV)


def gpu_params(soc: Soc, theoretical: float, ram: float, app_usable: float) -> tuple[dict[str, tuple[float, str]], float] | None:
    """The GPU section's values with their provenance, and the GPU's DRAM rate; None without a peak in the catalogue."""
    if soc.gpu_fp32 is None:
        return None
    g, r = reference().gpu, reference()
    family = "mali" if soc.gpu_name and soc.gpu_name.startswith("mali") else "adreno"
    bw = theoretical * GPU_DRAM_SHARE[family]
    return {
        "gemm": (g.gemm_ops * soc.gpu_fp32 / REF_GPU_FP32, f"derived: {REFERENCE} {g.gemm_ops / 1e9:.0f} GFLOPS x {soc.gpu_fp32 / 1e12:.2f}/3.07 TFLOPS FP32 ({RULES} gpu_params)"),
        "matvec": (bw * g.matvec_bps / r.dram.bw_gpu_bps, f"derived: the GPU's DRAM rate {bw / 1e9:.1f} GB/s ({family} clpeak share of theoretical) x {REFERENCE}'s matvec share of its own ({RULES} gpu_params)"),
        "max_alloc": (g.max_alloc_bytes, f"derived: {REFERENCE}'s (OpenCL per-allocation cap; {RULES} gpu_params)"),
        "usable": (min(app_usable, g.usable_bytes * ram / r.dram.size_bytes), f"derived: {REFERENCE}'s share of RAM ({RULES} gpu_params; MLC sees 4352 MB on a 12 GB phone, mlc-llm issue 2703)"),
        "launch": (g.launch_s, f"derived: {REFERENCE}'s (HeteroInfer arXiv 2501.14794: 10-20 us)"),
    }, bw


def core_power(core: CoreType, clock_hz: float, core_class: str) -> tuple[float, str]:
    """A core's active power: the reference core of its class (X4 at 3.3, A720 at 3.2, A520 at 2.3
    GHz), times per_clock relative to it (a wider core switches more), times the clock ratio to the
    reference's clock_exponent. Assumption: same process class; +-40%."""
    ref = reference()
    by_class = {"big": "cortex-x4", "mid": "cortex-a720", "little": "cortex-a520"}
    rc = max((c for c in ref.cpu.clusters if c.core == by_class[core_class]), key=lambda c: c.clock_hz)
    ref_core = core_types()[by_class[core_class]]
    rp = ref.power.cores[rc.name]
    w = rp.active_w * (core.per_clock / ref_core.per_clock) * (clock_hz / rc.clock_hz) ** ref.power.clock_exponent
    return w, (f"derived: {REFERENCE} {rc.core} {rp.active_w:.3g} W x per_clock {core.per_clock / ref_core.per_clock:.3f} x "
               f"({clock_hz / 1e9:g}/{rc.clock_hz / 1e9:g} GHz)^{ref.power.clock_exponent:g} ({RULES} core_power)")


# ----------------------------------------------------------------------------- the device file


def cluster_names(clusters: tuple[ClusterSpec, ...]) -> list[tuple[str, str]]:
    """(name, class) of each cluster: the first is ``prime`` (big), little-core clusters ``eff``,
    the others ``perf`` (``perf_hi``, ``perf_lo``, ``perf_N`` when there are several), mid class."""
    ct = core_types()
    out = []
    mids = [i for i, c in enumerate(clusters) if i > 0 and ct[c.core].core_class != "little"]
    littles = [i for i, c in enumerate(clusters) if i > 0 and ct[c.core].core_class == "little"]
    for i, c in enumerate(clusters):
        if i == 0:
            out.append(("prime", "big" if ct[c.core].core_class != "little" else "little"))
        elif i in littles:
            out.append(("eff" if len(littles) == 1 else f"eff{littles.index(i)}", "little"))
        else:
            k = mids.index(i)
            name = "perf" if len(mids) == 1 else (["perf_hi", "perf_lo"][k] if len(mids) == 2 else f"perf{k}")
            out.append((name, "mid"))
    return out


def _q(value: float, kind: str) -> str:
    return '"' + units.format_quantity(value, kind) + '"'


def device_yaml(name: str, soc_name: str | None, ram_bytes: float, storage: str | None = None, clusters_text: str | None = None,
                battery_wh: float | None = None, description: str | None = None) -> str:
    """The text of a device file for a phone of ``soc_name`` (or ``clusters_text`` for a SoC not in
    the catalogue, with the other parts taken from ``soc_name`` if given, else from the 8 Gen 3),
    ``ram_bytes`` of RAM and ``storage``; every value with its provenance."""
    ct = core_types()
    if soc_name is None and clusters_text is None:
        raise InputError(None, "--soc", "a SoC of the catalogue (pi2sim device socs) or --clusters")
    if soc_name is not None and soc_name not in socs():
        raise InputError(None, "--soc", f"a SoC of the catalogue ({', '.join(sorted(socs()))}); or --clusters for another", soc_name)
    if not 2e9 <= ram_bytes <= 64e9:
        raise InputError(None, "--ram", "between 2 GB and 64 GB", units.format_quantity(ram_bytes, "bytes"))
    soc = socs()[soc_name or "snapdragon-8-gen-3"]
    clusters = parse_clusters(clusters_text) if clusters_text else soc.clusters
    storage = storage or soc.storage
    ref = reference()
    L: list[str] = []
    soc_label = soc_name or "custom"
    L.append(f"# {name}: generated by `pi2sim device new` from the SoC catalogue (devices/catalogue/) and the rules of {RULES}.")
    L.append(f"# SoC {soc_label}{' (clusters given with --clusters)' if clusters_text else ''}, {units.format_quantity(ram_bytes, 'bytes')} RAM, {storage}.")
    L.append(f"# Every value is a rule applied to the catalogue and to the reference phone ({REFERENCE}, measured); refine it with")
    L.append("# your own measurements: `pi2sim calibrate --device THIS_FILE --scenarios YOUR_POINTS/` (README, 'Adding a phone').")
    L.append(f"name: {name}")
    ram_text = units.format_quantity(ram_bytes, "bytes")
    desc = description or f"{name}: {soc_label}, {ram_text} RAM, {storage} (generated from the SoC catalogue)"
    L.append(f'description: "{desc}"')
    L.append(f"soc: {soc_label}" + ("         # source: devices/catalogue/socs.yaml" if soc_name else "  # assumption: a SoC outside the catalogue, clusters from --clusters"))
    L.append("")
    L.append("cpu:")
    L.append("  clusters:")
    names = cluster_names(clusters)
    issue_speed = issue_speeds([(core_speed(ct[c.core], c.clock_hz), cls) for (_, cls), c in zip(names, clusters)])
    for (cname, cls), c in zip(names, clusters):
        core = ct[c.core]
        r = core_rates(core, c.clock_hz)
        src = "--clusters" if clusters_text else f"devices/catalogue/socs.yaml ({soc_name})"
        rule = f"derived: {REFERENCE} A720 per cycle x per_clock {core.per_clock} (devices/catalogue/cores.yaml) x {c.clock_hz / 1e9:g} GHz ({RULES} core_rates)"
        L.append(f"    - name: {cname}")
        L.append(f"      core: {c.core}")
        L.append(f"      count: {c.count}              # source: {src}")
        L.append(f"      clock: {_q(c.clock_hz, 'frequency')}    # source: {src} (vendor maximum)")
        L.append(f"      class: {cls}")
        L.append(f"      matvec_int4: {_q(r['matvec_int4'], 'bandwidth')}   # {rule}")
        L.append(f"      matvec_fp16: {_q(r['matvec_fp16'], 'bandwidth')}   # {rule}")
        L.append(f"      gemm_int4: {_q(r['gemm_int4'], 'ops_rate')}   # {rule}")
        L.append(f"      gemm_fp16: {_q(r['gemm_fp16'], 'ops_rate')}   # {rule}")
        L.append(f"      memcpy: {_q(r['memcpy'], 'bandwidth')}   # {rule}")
    fastest = max(core_speed(ct[c.core], c.clock_hz) for c in clusters)
    ref_fastest = max(core_speed(ct[c.core], c.clock_hz) for c in ref.cpu.clusters)
    k = ref_fastest / fastest
    same = f"derived: {REFERENCE}'s value (same kernels; {RULES})"
    L.append(f"  sparse_efficiency: {ref.cpu.sparse_efficiency}  # {same}")
    L.append(f"  sparse_density_exponent: {ref.cpu.sparse_density_exponent}  # {same}")
    L.append(f"  barrier: {_q(ref.cpu.barrier_s * k, 'time')}   # derived: {REFERENCE} x {k:.3f} (fastest-core speed ratio; {RULES})")
    L.append(f"  page_fault: {_q(ref.cpu.page_fault_s * k, 'time')}   # derived: {REFERENCE} x {k:.3f} (fastest-core speed ratio; {RULES})")
    L.append(f"  i8mm_gemm_speedup: {ref.cpu.i8mm_gemm_speedup}   # {same}")
    L.append(f"  batch_compute_share: {ref.cpu.batch_compute_share}  # {same}")
    L.append("")
    theo = dram_theoretical(soc.dram_rate, soc.bus_bits)
    bw = dram_rates(theo)
    npu = npu_params(soc, bw["bw_npu"])
    if npu is None:
        L.append(f"# no npu section: the {soc.npu_kind} NPU runs no engine pi2sim models (Genie, QNN, PowerServe and PowerInfer-2 need a Hexagon NPU)")
    else:
        L.append("npu:")
        L.append("  kind: hexagon")
        kinds = {"gemm": "ops_rate", "matvec": "bandwidth", "invocation": "time", "sync": "time", "graph_switch": "time"}
        for key, (v, note) in npu.items():
            text = _q(v, kinds[key]) if key in kinds else (str(int(v)) if key == "graph_tokens" else f"{v:g}")
            L.append(f"  {key}: {text}   # {note}")
    L.append("")
    app = app_memory(ram_bytes)
    gpu = gpu_params(soc, theo, ram_bytes, app)
    if gpu is None:
        L.append("# no gpu section: no peak rate of this SoC's GPU in the catalogue (GPU engines refuse the phone)")
    else:
        gp, gbw = gpu
        L.append("gpu:")
        kinds = {"gemm": "ops_rate", "matvec": "bandwidth", "max_alloc": "bytes", "usable": "bytes", "launch": "time"}
        for key, (v, note) in gp.items():
            L.append(f"  {key}: {_q(v, kinds[key])}   # {note}")
    L.append("")
    L.append("dram:")
    L.append(f"  size: {_q(ram_bytes, 'bytes')}   # source: the phone's specification (--ram)")
    L.append(f"  app_usable: {_q(app, 'bytes')}   # derived: {RULES} app_memory ({units.format_quantity(ram_bytes, 'bytes')} RAM; half up to 8 GB, RAM - 5 GB from 16 GB, PI2 v3 Table 3)")
    L.append(f"  bw_theoretical: {_q(theo, 'bandwidth')}   # derived: {soc.dram_type} {soc.dram_rate / 1e6:g} MT/s x {soc.bus_bits} bit (devices/catalogue/socs.yaml)")
    for key in ("bw_cpu", "bw_npu", "bw_cpu_npu"):
        v, note = bw[key], f"derived: theoretical x {REFERENCE}'s achieved share ({RULES} dram_rates, PI2 §2.3.1)"
        if key == "bw_cpu" and soc.cpu_dram_limit is not None:
            v, note = min(soc.cpu_dram_limit, theo), "derived: the CPU complex's limit measured on this SoC family (devices/catalogue/socs.yaml cpu_dram_limit)"
        elif key == "bw_cpu_npu" and soc.cpu_dram_limit is not None:
            v = max(v, min(soc.cpu_dram_limit, theo))
        L.append(f"  {key}: {_q(v, 'bandwidth')}   # {note}")
    gbw_v = gpu[1] if gpu is not None else bw["bw_gpu"]
    L.append(f"  bw_gpu: {_q(min(gbw_v, theo), 'bandwidth')}   # derived: theoretical x the GPU family's clpeak share ({RULES} gpu_params; arXiv 2410.03613 Table IV)")
    L.append("")
    uf = ufs_params(storage, issue_speed)
    s = ref.storage
    L.append("storage:")
    L.append(f"  type: {storage}")
    L.append(f"  queue_depth: {s.queue_depth}           # source: UFS single command queue of 32 entries (JEDEC UFS; PI2 §2.3.2)")
    L.append("  issue_cost:")
    for cls in ("big", "mid", "little"):
        v, note = uf[f"issue_cost.{cls}"]
        L.append(f"    {cls}: {_q(v, 'time')}   # {note}")
    L.append(f"  request_service: {_q(uf['request_service'][0], 'time')}   # {uf['request_service'][1]}")
    L.append(f"  span_reference: {_q(s.span_reference_bytes, 'bytes')}   # derived: {REFERENCE}'s (PI2 Fig. 3-b)")
    L.append(f"  span_exponent: {uf['span_exponent'][0]:.3f}   # {uf['span_exponent'][1]}")
    L.append(f"  bw_random: {_q(uf['bw_random'][0], 'bandwidth')}   # {uf['bw_random'][1]}")
    L.append(f"  bw_sequential: {_q(uf['bw_sequential'][0], 'bandwidth')}   # {uf['bw_sequential'][1]}")
    L.append(f"  latency: {_q(uf['latency'][0], 'time')}   # {uf['latency'][1]}")
    L.append(f"  multi_issuer_penalty: {s.multi_issuer_penalty}   # derived: {REFERENCE}'s (PI2 §2.3.2: one command queue)")
    L.append(f"  page: {_q(s.page_bytes, 'bytes')}   # assumption: usual Android page size")
    L.append(f"  readahead: {_q(s.readahead_bytes, 'bytes')}   # assumption: Linux default read_ahead_kb")
    L.append(f"  read_unit: {_q(s.read_unit_bytes, 'bytes')}   # source: UFS logical block 4 KB")
    L.append("")
    L.extend(_power_lines(names, clusters, npu is not None, gpu is not None, ram_bytes, battery_wh))
    L.append("")
    L.extend(_thermal_lines())
    return "\n".join(L) + "\n"


def _power_lines(names, clusters, has_npu, has_gpu, ram_bytes, battery_wh) -> list[str]:
    """Power by rule (derived, not measured: every phone reports energy, marked as derived)."""
    ref = reference()
    pw = ref.power
    ct = core_types()
    L = [f"# Power by rule ({RULES}): derived from {REFERENCE}'s power model (itself assumptions plus one fitted constant, docs/energy.md);",
         "# not measured on this phone.", "power:", "  cores:"]
    for (cname, cls), c in zip(names, clusters):
        w, note = core_power(ct[c.core], c.clock_hz, cls)
        ref_cls = {"big": "prime", "mid": "perf_hi", "little": "eff"}[cls]
        rc = pw.cores[ref_cls]
        L.append(f"    {cname}: {{active: {_q(w, 'power')}, idle: {_q(rc.idle_w, 'power')}, shared: {_q(rc.shared_w, 'power')}}}   # {note}; idle, shared: {REFERENCE}'s {ref_cls}")
    same = f"derived: {REFERENCE}'s ({RULES})"
    L.append(f"  clock_exponent: {pw.clock_exponent}   # {same}")
    if has_npu:
        L.append(f"  npu: {{active: {_q(pw.npu.active_w, 'power')}, idle: {_q(pw.npu.idle_w, 'power')}}}   # {same}")
    if has_gpu:
        L.append(f"  gpu: {{active: {_q(pw.gpu.active_w, 'power')}, idle: {_q(pw.gpu.idle_w, 'power')}}}   # {same}")
    L.append(f"  dram_energy: \"{pw.dram_j_per_byte / 1e-12 / 8:.3g} pJ/bit\"   # {same}")
    L.append(f"  dram_background: {_q(pw.dram_background_w * ram_bytes / ref.dram.size_bytes, 'power')}   # derived: {REFERENCE}'s x RAM size ratio (refresh scales with capacity; {RULES})")
    L.append(f"  ufs_energy: \"{pw.ufs_j_per_byte / 1e-12:.4g} pJ/B\"   # {same}")
    L.append(f"  ufs_request_energy: {_q_energy(pw.ufs_j_per_request)}   # {same}")
    L.append(f"  ufs_active: {_q(pw.ufs_active_w, 'power')}   # {same}")
    L.append(f"  platform: {_q(pw.platform_w, 'power')}   # {same}")
    wh = battery_wh if battery_wh is not None else 4500 * 3.87 / 1000
    note = "source: --battery" if battery_wh is not None else "assumption: 4,500 mAh x 3.87 V (a 2024-25 flagship's cell; give --battery)"
    L.append(f"  battery: \"{wh:.3g} Wh\"   # {note}")
    L.append(f"  peak_window: {_q(pw.peak_window_s, 'time')}   # {same}")
    return L


def _q_energy(j: float) -> str:
    return f'"{j * 1e6:g} uJ"'


def _thermal_lines() -> list[str]:
    t = reference().thermal
    same = f"derived: {REFERENCE}'s (assumptions there; {RULES}: a phone of the same class)"
    g = t.governor
    return ["thermal:",
            f"  ambient: \"{t.ambient_c:g} C\"   # {same}",
            f"  soc_capacity: \"{t.soc_heat_capacity:g} J/K\"   # {same}",
            f"  soc_to_body: \"{t.soc_to_body:g} K/W\"   # {same}",
            f"  body_capacity: \"{t.body_heat_capacity:g} J/K\"   # {same}",
            f"  body_to_ambient: \"{t.body_to_ambient:g} K/W\"   # {same}",
            "  governor:",
            f"    sensor: {g.sensor}",
            f"    trip: \"{g.trip_c:g} C\"   # {same}",
            f"    hysteresis: \"{g.hysteresis_k:g} C\"   # {same}",
            f"    poll: \"{g.poll_s:g} s\"   # {same}",
            f"    cpu_clock_levels: [{', '.join(f'{x:g}' for x in g.cpu_clock_levels)}]   # {same}"]


def shipped_phones() -> dict[str, str]:
    """The text of every generated phone of ``devices/catalogue/phones.yaml`` (name -> YAML)."""
    path = catalogue_dir() / "phones.yaml"
    data = yamlio.load(path)
    out = {}
    for name, p in (data.get("phones") or {}).items():
        try:
            ram = units.parse(p["ram"], "bytes")
            wh = None
            if "battery" in p:
                m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*mAh\s*", str(p["battery"]))
                if not m:
                    raise ValueError(f"battery like '3900 mAh', got {p['battery']!r}")
                wh = float(m.group(1)) * NOMINAL_CELL_V / 1000
            out[name] = device_yaml(name, p["soc"], ram, p.get("storage"), p.get("clusters"), wh, p.get("description"))
        except (KeyError, TypeError, ValueError, units.UnitError) as exc:
            raise InputError(path, f"phones.{name}", f"soc, ram and optionally storage, clusters, battery, description ({exc})") from None
    return out


NOMINAL_CELL_V = 3.87  # a Li-ion cell's nominal voltage (assumption, as the reference's battery)
