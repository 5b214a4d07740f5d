"""``pi2sim device``: a phone from its spec sheet (``new``), and the catalogue it draws on (``socs``, ``cores``)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "device",
        help="write a device file from a SoC and the phone's RAM and storage; list the SoC and core catalogue",
        description="A phone from its spec sheet: `pi2sim device new NAME --soc SOC --ram \"8 GB\"` writes a device YAML in which every "
        "value is a rule (pi2sim/specs/rules.py) applied to the SoC catalogue (devices/catalogue/) and to the measured reference "
        "phone (oneplus12), with its provenance on its line. Refine it with your own measurements: pi2sim calibrate.",
    )
    dsub = d.add_subparsers(dest="device_command", metavar="SUBCOMMAND", parser_class=type(d))
    dsub.required = True
    n = dsub.add_parser("new", help="write a device YAML for a phone (NAME.yaml, or --out)")
    n.add_argument("name", help="the device's name (lower case, digits, _ and -): the file is NAME.yaml")
    n.add_argument("--soc", default=None, help="a SoC of the catalogue (pi2sim device socs), e.g. snapdragon-8-gen-2, dimensity-8400")
    n.add_argument("--ram", required=True, help="the phone's RAM, e.g. \"8 GB\"")
    n.add_argument("--storage", default=None, help="ufs3.0, ufs3.1, ufs4.0 or ufs4.1 (default: the SoC's; phones with little storage often ship an older UFS)")
    n.add_argument("--clusters", default=None, help="CPU clusters for a SoC not in the catalogue, e.g. \"1x cortex-x3@3.36GHz,2x cortex-a715@2.8GHz,2x cortex-a710@2.8GHz,3x cortex-a510@2GHz\"")
    n.add_argument("--battery", default=None, help="battery capacity, e.g. \"3900 mAh\" (at 3.87 V) or \"15 Wh\" (default: 4,500 mAh, an assumption)")
    n.add_argument("--description", default=None, help="the file's description line")
    n.add_argument("--out", default=None, help="the file to write (default: NAME.yaml in the current directory); - prints it")
    n.add_argument("--force", action="store_true", help="overwrite an existing file")
    n.set_defaults(func=cmd_new)
    s = dsub.add_parser("socs", help="list the SoC catalogue")
    s.set_defaults(func=cmd_socs)
    c = dsub.add_parser("cores", help="list the core table: per-cycle kernel rates by core type")
    c.set_defaults(func=cmd_cores)
    g = dsub.add_parser("regenerate", help="rewrite the shipped phones of devices/catalogue/phones.yaml from the rules (--check: only say which differ)")
    g.add_argument("--check", action="store_true", help="write nothing; exit 1 if a shipped file differs from what the rules give")
    g.set_defaults(func=cmd_regenerate)


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _battery_wh(text: str | None) -> float | None:
    from ..errors import InputError

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(mAh|Wh)\s*", text)
    if not m:
        raise InputError(None, "--battery", "a capacity like '3900 mAh' or '15 Wh'", text)
    v = float(m.group(1))
    from ..specs.rules import NOMINAL_CELL_V

    wh = v * NOMINAL_CELL_V / 1000 if m.group(2) == "mAh" else v
    if not 1.0 <= wh <= 100.0:
        raise InputError(None, "--battery", "between 1 and 100 Wh (about 260 to 26,000 mAh)", text)
    return wh


def cmd_new(args: argparse.Namespace) -> int:
    from .. import units
    from ..atomic import write_text
    from ..errors import InputError
    from ..specs import rules
    from ..specs.device import load_device

    if not _NAME.match(args.name):
        raise InputError(None, "NAME", "a device name of lower-case letters, digits, _ and - (it becomes the file name)", args.name)
    try:
        ram = units.parse(args.ram, "bytes")
    except units.UnitError:
        raise InputError(None, "--ram", "a size like '8 GB'", args.ram) from None
    text = rules.device_yaml(args.name, args.soc, ram, args.storage, args.clusters, _battery_wh(args.battery), args.description)
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out) if args.out else Path(f"{args.name}.yaml")
    if out.is_dir():
        out = out / f"{args.name}.yaml"
    if out.stem != args.name:
        raise InputError(None, "--out", f"a file named {args.name}.yaml (a device file's name is its file name)", str(out))
    if out.exists() and not args.force:
        raise InputError(None, "--out", "a file that does not exist yet (or --force)", str(out))
    write_text(out, text)
    dev = load_device(out)  # the file loads as every device file does (a rule that produced nonsense fails here)
    print(f"wrote {out}: {dev.name}, {dev.soc}, {sum(c.count for c in dev.cpu.clusters)} cores, "
          f"{units.format_quantity(dev.dram.size_bytes, 'bytes')} ({units.format_quantity(dev.dram.app_usable_bytes, 'bytes')} for one app), "
          f"{dev.storage.type}, NPU: {dev.npu.kind if dev.npu else 'none modelled'}, GPU: {'yes' if dev.gpu else 'none modelled'}", file=sys.stderr)
    return 0


def cmd_socs(args: argparse.Namespace) -> int:
    from .. import units
    from ..specs import rules

    print(f"{'soc':32} {'cpu':60} {'dram':>12} {'storage':8} {'npu':14} gpu")
    for name, s in sorted(rules.socs().items()):
        cpu = ", ".join(f"{c.count}x {c.core}@{c.clock_hz / 1e9:g}" for c in s.clusters)
        dram = units.format_quantity(rules.dram_theoretical(s.dram_rate, s.bus_bits), "bandwidth")
        print(f"{name:32} {cpu:60} {dram:>12} {s.storage:8} {s.npu_kind:14} {s.gpu_name or '-'}")
    return 0


def cmd_cores(args: argparse.Namespace) -> int:
    from ..specs import rules

    print(f"{'core':14} {'class':6} {'designer':9} {'pipes':>5} {'per_clock':>9} {'matvec_int4 B/cyc':>17} {'gemm_int4 op/cyc':>16} {'gemm_i8mm op/cyc':>16}")
    for r in rules.per_cycle_table():
        print(f"{r['core']:14} {r['class']:6} {r['designer']:9} {r['simd_pipes']:>5} {r['per_clock']:>9.3f} {r['matvec_int4_B_per_cycle']:>17.3f} "
              f"{r['gemm_int4_ops_per_cycle']:>16.2f} {r['gemm_i8mm_ops_per_cycle']:>16.2f}")
    return 0


def cmd_regenerate(args: argparse.Namespace) -> int:
    from .. import resources
    from ..atomic import write_text
    from ..specs import rules

    stale = []
    for name, text in rules.shipped_phones().items():
        path = resources.data_dir("devices") / f"{name}.yaml"
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            write_text(path, text)
    verb = "differ from the rules" if args.check else "rewritten"
    print(f"{len(stale)} of {len(rules.shipped_phones())} generated phones {verb}{': ' + ', '.join(stale) if stale else ''}", file=sys.stderr)
    return 1 if (args.check and stale) else 0
