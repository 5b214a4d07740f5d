"""Coverage-guided fuzzing (atheris / libFuzzer) of the trace reader and the YAML loaders.

    python tests/fuzz_atheris.py trace_file -runs=10000
    python tests/fuzz_atheris.py device_yaml -runs=10000 -max_total_time=600

The entry points are those of tests/fuzz_targets.py; libFuzzer mutates the raw bytes, starting
from a seed corpus (a valid 24-token trace, the bundled device and model YAMLs) and steering by
the coverage of pi2sim's own code. A finding (an exception other than a one-line InputError, or
accepted nonsense) makes libFuzzer stop and write the crashing input to ``crash-*``.
Needs the ``fuzz`` extra (``pip install -e '.[fuzz]'``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

with atheris.instrument_imports(include=["pi2sim"]):
    import fuzz_targets as F
    from pi2sim import resources
    from pi2sim.errors import InputError
    from pi2sim.specs.device import load_device
    from pi2sim.specs.model import load_model
    from pi2sim.trace import load as load_trace  # noqa: F401


def _yaml_target(name: str, loader):
    def one(data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        with tempfile.TemporaryDirectory() as td:
            p = Path(td) / name
            p.write_text(text, encoding="utf-8", errors="surrogatepass")
            try:
                spec = loader(p)
            except InputError as exc:
                F._check_rejection(exc, str(p))
                F._tally(f"atheris_{name}", "rejected")
                return
            F._finite(spec)
            F._tally(f"atheris_{name}", "accepted")

    return one


TARGETS = {
    "trace_file": (F.trace_file, lambda: [F.trace_seed()]),
    "device_yaml": (_yaml_target("oneplus12.yaml", load_device), lambda: [(resources.data_dir("devices") / "oneplus12.yaml").read_bytes()]),
    "model_yaml": (_yaml_target("turbosparse-mistral-7b.yaml", load_model),
                   lambda: [(resources.data_dir("models") / "turbosparse-mistral-7b.yaml").read_bytes()]),
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags, e.g. -runs=10000]")
    name = sys.argv.pop(1)
    fn, seeds = TARGETS[name]
    corpus = Path(tempfile.mkdtemp(prefix=f"pi2sim-fuzz-{name}-"))
    for i, s in enumerate(seeds()):
        (corpus / f"seed{i}").write_bytes(s)
    atheris.Setup(sys.argv + [str(corpus)], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
