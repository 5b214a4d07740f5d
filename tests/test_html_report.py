"""--report report.html on validate, compare and sweep: one self-contained file, looked at in a real
browser (headless Chromium through Playwright): it loads without errors, fetches nothing, and every
image decodes, on a laptop's and a phone's viewport."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import have, require

from pi2sim import __version__
from pi2sim.report import html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# the flags Chromium needs on a machine with a closed network (no background fetches to Google's hosts)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORTS = {"laptop": (1280, 800), "phone": (390, 844)}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pi2sim", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports")
    runs = {
        "validate": ["validate", "--set", "energy", "--fast", "--quiet", "--report", str(d / "v.html")],
        "compare": ["compare", "--model", "bamboo-7b", "--policies", "powerinfer2,llamacpp,dense@qnn", "--ffn-offload", "0",
                    "--decode-tokens", "8", "--fidelity", "analytic", "--quiet", "--report", str(d / "c.html")],
    }
    grid = d / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "demo <b>", "base": {"model": "smollm2-135m", "decode_tokens": 8},
                                    "factors": {"memory_gb": [0.35, 0.4, 0.5], "policy": ["powerinfer2", "llm-in-a-flash"]}}))
    runs["sweep"] = ["sweep", str(grid), "--out", str(d / "s.csv"), "--quiet", "--report", str(d / "s.html")]
    out = {}
    for name, args in runs.items():
        r = cli(*args, cwd=d)
        assert r.returncode == 0, r.stderr
        out[name] = Path(args[-1])
    return out


@pytest.mark.parametrize("name", ["validate", "compare", "sweep"])
def test_report_is_one_self_contained_file(reports, name):
    text = reports[name].read_text()
    assert text.startswith("<!doctype html>") and "</html>" in text
    # nothing to fetch: no link, script or external image or font, every image inline
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert text.count('src="data:image/png;base64,') >= 1
    assert f"pi2sim {__version__}" in text  # the version
    assert f"pi2sim {name}" in text  # the command that made it
    assert "<details>" in text  # the resolved configuration


def test_report_escapes_what_it_shows(reports):
    text = reports["sweep"].read_text()
    assert "demo <b>" not in text and "demo &lt;b&gt;" in text


def test_bad_report_path_is_refused_before_work(tmp_path):
    r = cli("validate", "--set", "energy", "--report", str(tmp_path / "v.pdf"))
    assert r.returncode == 2 and "--report" in r.stderr and ".html" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_render_is_deterministic_for_a_fixed_time():
    from datetime import datetime, timezone

    import pandas as pd

    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    s = [html.Section("t", "a\n\nb", table=pd.DataFrame({"x": [1.23456, float("nan")], "y": ["<i>", "ok"]}))]
    a, b = html.render("T", s, ["run"], when), html.render("T", s, ["run"], when)
    assert a == b and "&lt;i&gt;" in a and "1.235" in a and "<p>a</p>" in a and "<p>b</p>" in a


@pytest.mark.parametrize("name", ["validate", "compare", "sweep"])
def test_report_in_a_real_browser(reports, name, tmp_path):
    require(CHROMIUM is not None, "Debian's chromium (apt-get install chromium; the README's test command installs it)")
    require(have("playwright"), "playwright (pip install 'pi2sim[browser]')")
    from playwright.sync_api import sync_playwright

    page_url = reports[name].resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for label, (w, h) in VIEWPORTS.items():
                page = browser.new_page(viewport={"width": w, "height": h})
                errors, requests = [], []
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("request", lambda r: requests.append(r.url))
                page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
                page.goto(page_url, wait_until="load")
                assert not errors, errors
                assert all(u == page_url or u.startswith("data:") for u in requests), requests  # offline: nothing fetched
                images = page.evaluate("""() => Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0,
                                          w: i.getBoundingClientRect().width, box: i.parentElement.getBoundingClientRect().width, alt: i.alt}))""")
                assert images and all(i["ok"] for i in images), images
                assert all(0 < i["box"] <= w for i in images), f"a figure's box wider than the {label} viewport"
                assert all(i["w"] >= min(480, w - 40) for i in images), "a figure shrunk below a readable width"
                assert all(i["alt"] for i in images)
                # the page itself never scrolls sideways (wide tables scroll inside their box)
                assert page.evaluate("() => document.documentElement.scrollWidth") <= w + 1
                page.screenshot(path=str(tmp_path / f"{name}-{label}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
