"""Device specs (``devices/<name>.yaml``): CPU clusters, NPU, GPU, DRAM and UFS of one phone.

Values carry units in the YAML and are SI inside (bytes, seconds, hertz, bytes per second,
operations per second). Every number in a device YAML cites its source, or says ``derived:``,
``assumption:`` or ``fitted to <target>`` in a comment (``tests/test_provenance.py``).

The models these parameters feed are documented where they are used:
:mod:`pi2sim.engine.ufs` (flash), :mod:`pi2sim.engine.dram` (shared bandwidth),
:mod:`pi2sim.engine.compute` (CPU / NPU / GPU kernels).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from .. import resources, schema, yamlio
from ..errors import InputError
from ..schema import spec_field

CoreClass = Literal["big", "mid", "little"]


@dataclass(frozen=True, kw_only=True)
class CpuCluster:
    name: str = spec_field(help="cluster name, e.g. prime, perf_hi")
    core: str = spec_field(help="core type, e.g. cortex-x4 (descriptive)")
    count: int = spec_field(lo=1, hi=64, help="cores in the cluster")
    clock_hz: float = spec_field(key="clock", unit="frequency", lo=1e8, hi=1e10, help="core clock (descriptive)")
    core_class: CoreClass = spec_field(key="class", help="big / mid / little: selects the I/O issue cost")
    matvec_int4_bps: float = spec_field(
        key="matvec_int4", unit="bandwidth", lo=500e6, hi=200e9, help="dense INT4 matrix-vector throughput per core (weight bytes/s)"
    )
    matvec_fp16_bps: float = spec_field(
        key="matvec_fp16", unit="bandwidth", lo=500e6, hi=200e9, help="dense FP16 matrix-vector throughput per core (weight bytes/s)"
    )
    gemm_int4_ops: float = spec_field(key="gemm_int4", unit="ops_rate", lo=1e9, hi=5e11, help="dense INT4 matrix-matrix throughput per core")
    gemm_fp16_ops: float = spec_field(key="gemm_fp16", unit="ops_rate", lo=1e9, hi=5e11, help="dense FP16 matrix-matrix throughput per core")
    memcpy_bps: float = spec_field(key="memcpy", unit="bandwidth", lo=100e6, hi=200e9, help="memory copy throughput per core")


@dataclass(frozen=True, kw_only=True)
class Cpu:
    clusters: list[CpuCluster] = spec_field(help="CPU clusters, fastest first")
    sparse_efficiency: float = spec_field(
        gt=0.0, hi=1.0, help="per-byte speed of sparse (gathered-row) kernels relative to dense matvec, at 10% of rows computed"
    )
    sparse_density_exponent: float = spec_field(
        lo=0.0, hi=2.0, help="sparse-kernel efficiency grows as (share of rows computed / 0.1) ** exponent, up to dense speed"
    )
    barrier_s: float = spec_field(key="barrier", unit="time", lo=0.5e-6, hi=5e-3, zero_ok=True, help="cost of one thread barrier / fork-join")
    page_fault_s: float = spec_field(key="page_fault", unit="time", lo=0.5e-6, hi=1e-3, zero_ok=True, help="CPU cost of one major page fault (mmap)")
    i8mm_gemm_speedup: float = spec_field(
        lo=1.0, hi=16.0, help="matrix-matrix speed of int8-matmul kernels (8-bit activations, e.g. KleidiAI's i8mm) relative to gemm_int4"
    )
    batch_compute_share: float = spec_field(
        gt=0.0, hi=1.0,
        help="batched matvec (Best-of-N): cost of one more sequence on a row already loaded, relative to a dense matvec pass "
        "(1: each further sequence costs a full pass; a kernel that shares the weight load and unpack costs less)",
    )

    def validate(self, source) -> None:
        if not self.clusters:
            raise InputError(source, "clusters", "at least one CPU cluster")
        names = [c.name for c in self.clusters]
        if len(set(names)) != len(names):
            raise InputError(source, "clusters", "unique cluster names", names)


NpuKind = Literal["hexagon", "mediatek-apu", "google-tpu", "samsung-npu", "other"]


@dataclass(frozen=True, kw_only=True)
class Npu:
    kind: NpuKind = spec_field(help="which NPU: hexagon (Qualcomm: what QNN, Genie, PowerServe and PowerInfer-2 run on), mediatek-apu, google-tpu, samsung-npu, other")
    gemm_ops: float = spec_field(key="gemm", unit="ops_rate", lo=50e9, hi=1e15, help="dense INT8/INT4 GEMM throughput (prefill)")
    matvec_bps: float = spec_field(key="matvec", unit="bandwidth", lo=1e9, hi=1e12, help="dense matrix-vector weight throughput (compute limit)")
    invocation_s: float = spec_field(key="invocation", unit="time", lo=1e-6, hi=20e-3, zero_ok=True, help="fixed cost to submit one graph execution")
    sync_s: float = spec_field(
        key="sync", unit="time", lo=1e-6, hi=50e-3, zero_ok=True,
        help="CPU-NPU handshake when the CPU waits on an NPU result mid-token (input write, completion wait, read-back)",
    )
    graph_switch_s: float = spec_field(key="graph_switch", unit="time", lo=1e-6, hi=1.0, zero_ok=True, help="cost to switch to another static graph")
    graph_tokens: int = spec_field(lo=1, hi=65536, help="tokens per static prefill graph (prompts are padded to a multiple)")
    mixed_precision_factor: float = spec_field(
        gt=0.0, hi=1.0, help="speed with INT8-outlier + INT4 mixed precision relative to plain per-channel INT4"
    )
    fp16_slowdown: float = spec_field(lo=1.0, hi=10000.0, help="FP16 matmul time relative to INT8")


@dataclass(frozen=True, kw_only=True)
class Gpu:
    gemm_ops: float = spec_field(key="gemm", unit="ops_rate", lo=10e9, hi=50e12, help="dense GEMM throughput (prefill)")
    matvec_bps: float = spec_field(key="matvec", unit="bandwidth", lo=1e9, hi=1e12, help="matrix-vector weight throughput (decode)")
    max_alloc_bytes: float = spec_field(key="max_alloc", unit="bytes", lo=16e6, hi=1e12, help="largest single OpenCL allocation")
    usable_bytes: float = spec_field(key="usable", unit="bytes", lo=64e6, hi=1e12, help="memory the GPU runtime lets one app use")
    launch_s: float = spec_field(key="launch", unit="time", lo=0.5e-6, hi=0.01, zero_ok=True, help="per-kernel launch cost")


@dataclass(frozen=True, kw_only=True)
class Dram:
    size_bytes: float = spec_field(key="size", unit="bytes", lo=256e6, hi=2e12, help="physical DRAM")
    app_usable_bytes: float = spec_field(key="app_usable", unit="bytes", lo=128e6, hi=2e12, help="most one app may use")
    bw_theoretical_bps: float = spec_field(key="bw_theoretical", unit="bandwidth", lo=1e9, hi=1e13, help="theoretical peak")
    bw_cpu_bps: float = spec_field(key="bw_cpu", unit="bandwidth", lo=1e9, hi=1e13, help="reachable by the CPU alone")
    bw_npu_bps: float = spec_field(key="bw_npu", unit="bandwidth", lo=1e9, hi=1e13, help="reachable by the NPU alone")
    bw_cpu_npu_bps: float = spec_field(key="bw_cpu_npu", unit="bandwidth", lo=1e9, hi=1e13, help="reachable by CPU and NPU together")
    bw_gpu_bps: float = spec_field(key="bw_gpu", unit="bandwidth", lo=1e9, hi=1e13, help="reachable by the GPU alone")

    def validate(self, source) -> None:
        if self.app_usable_bytes > self.size_bytes:
            raise InputError(source, "app_usable", f"at most size ({self.size_bytes / 1e9:g} GB)", self.app_usable_bytes)
        for key, v in (("bw_cpu", self.bw_cpu_bps), ("bw_npu", self.bw_npu_bps), ("bw_cpu_npu", self.bw_cpu_npu_bps), ("bw_gpu", self.bw_gpu_bps)):
            if v > self.bw_theoretical_bps:
                raise InputError(source, key, "at most bw_theoretical", v)
        if self.bw_cpu_npu_bps < max(self.bw_cpu_bps, self.bw_npu_bps):
            raise InputError(source, "bw_cpu_npu", "at least the larger of bw_cpu and bw_npu (both together reach no less)", self.bw_cpu_npu_bps)


@dataclass(frozen=True, kw_only=True)
class IssueCost:
    big_s: float = spec_field(key="big", unit="time", lo=1e-7, hi=1e-3, help="CPU time to issue and complete one read, big core")
    mid_s: float = spec_field(key="mid", unit="time", lo=1e-7, hi=1e-3)
    little_s: float = spec_field(key="little", unit="time", lo=1e-7, hi=1e-3)

    def of(self, core_class: str) -> float:
        return {"big": self.big_s, "mid": self.mid_s, "little": self.little_s}[core_class]


@dataclass(frozen=True, kw_only=True)
class Storage:
    type: str = spec_field(help="e.g. ufs4.0")
    queue_depth: int = spec_field(lo=1, hi=4096, help="entries of the (single) command queue")
    issue_cost: IssueCost = spec_field(help="per-request CPU cost on the issuing core, by core class")
    request_service_s: float = spec_field(
        key="request_service", unit="time", lo=1e-7, hi=1e-3, help="device time per small random request within span_reference"
    )
    span_reference_bytes: float = spec_field(key="span_reference", unit="bytes", lo=1e6, hi=16e9, help="address span with no mapping penalty")
    span_exponent: float = spec_field(lo=0.0, hi=2.0, help="per-request time grows as (span / span_reference) ** exponent")
    bw_random_bps: float = spec_field(key="bw_random", unit="bandwidth", lo=10e6, hi=100e9, help="media transfer rate, random reads")
    bw_sequential_bps: float = spec_field(key="bw_sequential", unit="bandwidth", lo=10e6, hi=100e9, help="media transfer rate, sequential reads")
    latency_s: float = spec_field(key="latency", unit="time", lo=1e-6, hi=1e-2, help="read latency beyond service (NAND read, completion)")
    multi_issuer_penalty: float = spec_field(lo=0.0, hi=0.95, help="throughput lost when several cores issue to the one queue")
    page_bytes: float = spec_field(key="page", unit="bytes", lo=512, hi=2**21, help="OS page size (mmap)")
    readahead_bytes: float = spec_field(key="readahead", unit="bytes", lo=4096, hi=64 * 2**20, zero_ok=True, help="kernel readahead window (mmap)")
    read_unit_bytes: float = spec_field(key="read_unit", unit="bytes", lo=512, hi=2**20, help="logical block: reads are rounded up to it")


@dataclass(frozen=True, kw_only=True)
class UnitPower:
    active_w: float = spec_field(key="active", unit="power", lo=0.02, hi=15.0, help="power while busy (at the nominal clock)")
    idle_w: float = spec_field(key="idle", unit="power", lo=1e-4, hi=2.0, zero_ok=True, help="power while powered but idle")


@dataclass(frozen=True, kw_only=True)
class CorePower(UnitPower):
    """One core of a CPU cluster, and what the cluster draws beyond its cores while any is busy."""

    shared_w: float = spec_field(key="shared", unit="power", default=0.0, lo=1e-3, hi=3.0, zero_ok=True,
                                 help="the cluster's own draw while any of its cores is busy (clock tree, rail, its share of the L3 and DSU)")


@dataclass(frozen=True, kw_only=True)
class Power:
    """What each component draws (:mod:`pi2sim.engine.power`): a busy unit its ``active`` power,
    an idle one its ``idle`` power, DRAM and UFS per byte moved, the rest of the phone a baseline."""

    cores: dict[str, CorePower] = spec_field(help="per CPU cluster (by name): power of one core, busy at the cluster's clock / idle, and the cluster's shared power")
    clock_exponent: float = spec_field(lo=1.0, hi=4.0, help="a core's active power scales as (clock / nominal clock) ** clock_exponent")
    npu: UnitPower | None = spec_field(default=None, help="NPU power, busy / idle (none: the phone has no NPU section)")
    gpu: UnitPower | None = spec_field(default=None, help="GPU power, busy / idle (none: the phone has no GPU section)")
    dram_j_per_byte: float = spec_field(key="dram_energy", unit="energy_per_byte", lo=1e-13, hi=1e-9, help="DRAM energy per byte read or written")
    dram_background_w: float = spec_field(key="dram_background", unit="power", lo=1e-3, hi=5.0, help="DRAM power while the phone is awake (refresh, standby)")
    ufs_j_per_byte: float = spec_field(key="ufs_energy", unit="energy_per_byte", lo=1e-12, hi=1e-8, help="UFS energy per byte read")
    ufs_j_per_request: float = spec_field(key="ufs_request_energy", unit="energy", lo=1e-8, hi=1e-4, zero_ok=True, help="UFS energy per read request")
    ufs_active_w: float = spec_field(key="ufs_active", unit="power", lo=1e-3, hi=5.0, help="UFS power while it serves requests (above its idle power)")
    platform_w: float = spec_field(key="platform", unit="power", lo=1e-2, hi=10.0, help="the rest of the phone while it decodes (SoC uncore, rails, radios idle; display off)")
    battery_j: float = spec_field(key="battery", unit="energy", lo=1e3, hi=1e6, help="battery capacity")
    peak_window_s: float = spec_field(key="peak_window", unit="time", lo=1e-5, hi=0.1,
                                      help="peak power is the highest mean power over any window this long (a power meter's averaging time)")


@dataclass(frozen=True, kw_only=True)
class Governor:
    """A step-wise thermal governor (Linux ``step_wise``): every ``poll`` it lowers the CPU
    clusters' clock by one level while the sensed temperature is above ``trip`` and rising, and
    raises it by one when the temperature is below ``trip - hysteresis``."""

    sensor: Literal["soc", "body"] = spec_field(help="which node of the thermal model the governor reads")
    trip_c: float = spec_field(key="trip", unit="temperature", lo=20.0, hi=120.0, help="trip temperature")
    hysteresis_k: float = spec_field(key="hysteresis", unit="temperature", lo=0.1, hi=20.0, help="clocks rise again below trip - hysteresis (kelvin)")
    poll_s: float = spec_field(key="poll", unit="time", lo=1e-2, hi=60.0, help="how often the governor acts")
    cpu_clock_levels: list[float] = spec_field(help="the CPU clock as a share of nominal at each cooling level, from 1.0 down")

    def validate(self, source) -> None:
        lv = self.cpu_clock_levels
        if not lv or lv[0] != 1.0 or any(b >= a for a, b in zip(lv, lv[1:])) or lv[-1] <= 0.1:
            raise InputError(source, "cpu_clock_levels", "a falling list of clock shares from 1.0 down to above 0.1", lv)


@dataclass(frozen=True, kw_only=True)
class Thermal:
    """A lumped RC model (:mod:`pi2sim.engine.thermal`): the SoC node (die, package, shield) takes
    the phone's power and passes it through ``soc_to_body`` to the body node (frame, battery,
    glass), which sheds it through ``body_to_ambient``."""

    ambient_c: float = spec_field(key="ambient", unit="temperature", lo=5.0, hi=50.0, help="ambient temperature (default start temperature of both nodes)")
    soc_heat_capacity: float = spec_field(key="soc_capacity", unit="heat_capacity", lo=0.1, hi=1000.0, help="heat capacity of the SoC node")
    soc_to_body: float = spec_field(unit="thermal_resistance", lo=0.05, hi=100.0, help="thermal resistance SoC node -> body node")
    body_heat_capacity: float = spec_field(key="body_capacity", unit="heat_capacity", lo=1.0, hi=10000.0, help="heat capacity of the body node")
    body_to_ambient: float = spec_field(unit="thermal_resistance", lo=0.1, hi=200.0, help="thermal resistance body node -> ambient")
    governor: Governor = spec_field(help="the thermal governor")


@dataclass(frozen=True, kw_only=True)
class DeviceSpec:
    name: str = spec_field(help="device name (the file stem)")
    description: str = spec_field(default="")
    soc: str = spec_field(help="system on chip")
    cpu: Cpu = spec_field()
    npu: Npu | None = spec_field(default=None, help="the NPU (none: the phone has none any modelled engine can use; NPU engines refuse it)")
    gpu: Gpu | None = spec_field(default=None, help="the GPU (none: GPU engines refuse the phone)")
    dram: Dram = spec_field()
    storage: Storage = spec_field()
    power: Power | None = spec_field(default=None, help="power model (energy per token); none: energy is not reported")
    thermal: Thermal | None = spec_field(default=None, help="thermal model (thermal=true); none: the phone stays cool")
    path: str = spec_field(default="", help="(set by the loader)")

    def validate(self, source) -> None:
        stem = Path(str(source)).stem if source else self.name
        if source and stem != self.name:
            raise InputError(source, "name", f"the file name without .yaml ({stem!r})", self.name)
        if self.gpu is not None and self.gpu.usable_bytes > self.dram.app_usable_bytes:
            raise InputError(source, "gpu.usable", "at most dram.app_usable", self.gpu.usable_bytes)
        if self.power is not None:
            names = [c.name for c in self.cpu.clusters]
            if sorted(self.power.cores) != sorted(names):
                raise InputError(source, "power.cores", f"one entry per CPU cluster ({', '.join(names)})", sorted(self.power.cores))

    # -- cores
    def require_npu(self, engine: str, kind: str = "hexagon") -> "Npu":
        """The NPU an engine runs on, or a one-line refusal naming what the phone lacks."""
        from ..errors import ConfigurationRefused

        if self.npu is None or self.npu.kind != kind:
            has = "no NPU section" if self.npu is None else f"a {self.npu.kind} NPU"
            raise ConfigurationRefused(None, engine, f"a phone with a {kind} NPU ({self.name} has {has})")
        return self.npu

    def require_gpu(self, engine: str) -> "Gpu":
        from ..errors import ConfigurationRefused

        if self.gpu is None:
            raise ConfigurationRefused(None, engine, f"a phone with a GPU section ({self.name} has none)")
        return self.gpu

    def cores(self) -> list["Core"]:
        out = []
        for c in self.cpu.clusters:
            for i in range(c.count):
                out.append(Core(f"{c.name}{i}", c))
        return out

    def core(self, core_id: str) -> "Core":
        for c in self.cores():
            if c.id == core_id:
                return c
        raise InputError(self.path or None, "cores", f"a core id of {self.name} ({', '.join(c.id for c in self.cores())})", core_id)


@dataclass(frozen=True)
class Core:
    id: str
    cluster: CpuCluster

    @property
    def core_class(self) -> str:
        return self.cluster.core_class

    def matvec_bps(self, dtype: str) -> float:
        return self.cluster.matvec_fp16_bps if dtype == "fp16" else self.cluster.matvec_int4_bps

    def gemm_ops(self, dtype: str) -> float:
        """GEMM rate per kernel class; the int8-matmul class ("i8mm") is the INT4 rate times the
        CPU's ``i8mm_gemm_speedup`` (applied by the timing engine, which has the CPU spec)."""
        return self.cluster.gemm_fp16_ops if dtype == "fp16" else self.cluster.gemm_int4_ops


def at_cpu_clock(device: DeviceSpec, share: float) -> DeviceSpec:
    """The device with every CPU cluster clocked at ``share`` of its nominal clock (a thermal
    governor's cooling level): the cores' kernel and copy rates scale with the clock, and so do the
    CPU-side costs of an I/O request, a barrier and a page fault (they are instructions too).
    DRAM, UFS, NPU and GPU are unchanged (the governor throttles the CPU clusters only)."""
    if share == 1.0:
        return device
    clusters = [replace(c, clock_hz=c.clock_hz * share, matvec_int4_bps=c.matvec_int4_bps * share, matvec_fp16_bps=c.matvec_fp16_bps * share,
                        gemm_int4_ops=c.gemm_int4_ops * share, gemm_fp16_ops=c.gemm_fp16_ops * share, memcpy_bps=c.memcpy_bps * share)
                for c in device.cpu.clusters]
    cpu = replace(device.cpu, clusters=clusters, barrier_s=device.cpu.barrier_s / share, page_fault_s=device.cpu.page_fault_s / share)
    ic = device.storage.issue_cost
    storage = replace(device.storage, issue_cost=replace(ic, big_s=ic.big_s / share, mid_s=ic.mid_s / share, little_s=ic.little_s / share))
    return replace(device, cpu=cpu, storage=storage)


def load_device(name_or_path: str | Path, overrides: dict | None = None) -> DeviceSpec:
    """Load a bundled device by name (``oneplus12``, ``oneplus12.yaml``) or a device YAML by path.

    ``overrides`` maps dotted YAML key paths to values (``{"storage.latency": "60 us"}``); they
    are validated like the file."""
    path = resources.resolve("devices", name_or_path, what="--device")
    data = yamlio.load(path)
    if not isinstance(data, dict):
        raise InputError(path, None, "a mapping with name, soc, cpu, npu, gpu, dram, storage")
    if overrides:
        from ..config import override_yaml

        data = override_yaml(data, overrides, f"{path} (--set device.*)")
    if "path" in data:  # a field of the spec, filled by this loader: not something a file may set
        raise InputError(path, "path", "unknown key (a device file's location is where it is, not a setting)")
    spec = schema.build(DeviceSpec, data, path)
    return replace(spec, path=str(path))


def device_names() -> list[str]:
    return resources.bundled_names("devices")
