"""Regenerate the README's figures from the simulator: ``python docs/figures.py``.

Writes ``docs/figures/<name>.png`` and ``docs/figures/figures.json`` (each figure's data, the pi2sim
version and the settings; pi2sim.workflows.figures says why the data is what is compared).
``--check`` regenerates the data only and exits 1 when a committed figure is stale: its data
differs from a fresh run's, or its PNG was drawn from other data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pi2sim import __version__
from pi2sim.atomic import write_bytes, write_text
from pi2sim.report.figures import png_bytes
from pi2sim.workflows import figures as F
from pi2sim.workflows.figures import DATA_KEY

OUT = Path(__file__).resolve().parent / "figures"


def png_data_hash(path: Path) -> str | None:
    from PIL import Image

    with Image.open(path) as im:
        return im.text.get(DATA_KEY)


def stale(record: dict, out: Path) -> list[str]:
    """What is stale in ``out`` against a fresh ``record`` (the JSON main writes)."""
    index = out / "figures.json"
    if not index.exists():
        return [f"{index}: missing"]
    old = json.loads(index.read_text())
    problems = []
    if old.get("pi2sim_version") != record["pi2sim_version"] or old.get("settings") != record["settings"]:
        problems.append(f"made with pi2sim {old.get('pi2sim_version')} and settings {old.get('settings')}")
    for name, fresh in record["figures"].items():
        if old.get("figures", {}).get(name, {}).get("sha256") != fresh["sha256"]:
            problems.append(f"{name}: its data changed")
        png = out / f"{name}.png"
        if not png.exists() or png_data_hash(png) != fresh["sha256"]:
            problems.append(f"{png.name}: drawn from other data")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the committed figures are current (exit 1 if not)")
    ap.add_argument("--out", type=Path, default=OUT, help="directory of the figures (default docs/figures)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    data = F.gather(progress=not args.quiet)
    record = {"pi2sim_version": __version__, "settings": F.settings(),
              "figures": {name: {"sha256": F.data_sha256(data[name]), "data": data[name]} for name in F.FIGURES}}
    index = args.out / "figures.json"
    if args.check:
        problems = stale(record, args.out)
        if problems:
            print("stale figures (run python docs/figures.py): " + "; ".join(problems), file=sys.stderr)
            return 1
        print(f"{len(F.FIGURES)} figures current")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in F.FIGURES:
        fig = F.draw(name, data[name])
        write_bytes(args.out / f"{name}.png", png_bytes(fig, {DATA_KEY: record["figures"][name]["sha256"]}))
    write_text(index, json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(F.FIGURES)} figures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
