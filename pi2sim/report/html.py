"""One self-contained HTML page for a result (``--report report.html`` on validate, compare, sweep).

The page holds its figures as base64 PNGs, its tables, the resolved configuration, the pi2sim
version and the command that made it, and fetches nothing: no external stylesheet, script, font
or image, so it opens offline and can be mailed as one file. The layout is one column that reads
on a laptop and on a phone (wide tables scroll sideways inside their box). Jinja2 renders it with
autoescaping, so a scenario title or a file name cannot inject markup.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from ..version import __version__


@dataclass
class Figure:
    png: bytes
    alt: str  # what the figure shows, for screen readers and for when an image cannot be shown
    caption: str = ""
    wide: bool = False  # the whole width of the page (a figure with fine detail), not one column of the grid


@dataclass
class Section:
    heading: str
    text: str = ""  # plain text; paragraphs separated by blank lines
    figures: list[Figure] = field(default_factory=list)
    table: pd.DataFrame | None = None
    table_note: str = ""
    details: list[tuple[str, str]] = field(default_factory=list)  # (summary, preformatted text), folded


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="pi2sim {{ version }}">
<title>{{ title }}</title>
<style>
:root { --fg: #1d1d1f; --muted: #5f6368; --line: #dadce0; --bg: #ffffff; --band: #f6f8fa; --accent: #3d5a98; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: var(--bg);
       font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 1.2rem 1rem 3rem; }
h1 { font-size: 1.5rem; margin: 0.2rem 0 0.4rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 0.6rem; padding-bottom: 0.2rem; border-bottom: 1px solid var(--line); }
p { margin: 0.4rem 0 0.8rem; }
.meta { color: var(--muted); font-size: 0.85rem; }
.meta code, pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.82rem; }
.command { background: var(--band); border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.7rem;
           white-space: pre-wrap; overflow-wrap: anywhere; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr)); gap: 1rem; }
figure { margin: 0; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.85rem; margin-top: 0.3rem; }
.table { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; max-height: 36rem; overflow-y: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.84rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3rem 0.55rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { position: sticky; top: 0; background: var(--band); }
.num { text-align: right; }
tbody tr:nth-child(even) { background: #fbfbfc; }
details { margin: 0.4rem 0; border: 1px solid var(--line); border-radius: 6px; padding: 0.3rem 0.7rem; }
summary { cursor: pointer; color: var(--accent); }
details pre { overflow-x: auto; margin: 0.5rem 0; }
.note { color: var(--muted); font-size: 0.85rem; }
@media (max-width: 600px) {
  body { font-size: 14px; } main { padding: 0.8rem 0.6rem 2rem; } h1 { font-size: 1.25rem; }
  /* a figure keeps a readable size and scrolls sideways in its box instead of shrinking its text away */
  figure { overflow-x: auto; } figure img { width: 640px; max-width: none; }
}
</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
<p class="meta">pi2sim {{ version }} &middot; {{ created }}</p>
<div class="command" aria-label="command">{{ command }}</div>
{% for s in sections %}
<section>
<h2>{{ s.heading }}</h2>
{% for para in s.paragraphs %}<p>{{ para }}</p>
{% endfor %}
{% if s.figures %}<div class="figures">
{% for f in s.figures %}<figure{% if f.wide %} class="wide"{% endif %}><img src="data:image/png;base64,{{ f.b64 }}" alt="{{ f.alt }}" width="{{ f.width }}" height="{{ f.height }}">{% if f.caption %}<figcaption>{{ f.caption }}</figcaption>{% endif %}</figure>
{% endfor %}</div>{% endif %}
{% if s.table_html %}<div class="table">{{ s.table_html }}</div>{% if s.table_note %}<p class="note">{{ s.table_note }}</p>{% endif %}{% endif %}
{% for summary, text in s.details %}<details><summary>{{ summary }}</summary><pre>{{ text }}</pre></details>
{% endfor %}
</section>
{% endfor %}
</main>
</body>
</html>
"""


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR (the page reserves the space before the image decodes)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _cell(v) -> str:
    """A number to four significant digits (thousands grouped above 10,000), anything else as text."""
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)


def _table_html(df: pd.DataFrame) -> str:
    """The table, numeric columns right-aligned; every cell escaped."""
    from markupsafe import escape

    num = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    head = "".join(f'<th{" class=num" if n else ""}>{escape(str(c))}</th>' for c, n in zip(df.columns, num))
    rows = []
    for rec in df.itertuples(index=False):
        rows.append("<tr>" + "".join(f'<td{" class=num" if n else ""}>{escape(_cell(v))}</td>' for v, n in zip(rec, num)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def command_line(argv: list[str] | None) -> str:
    return "pi2sim " + shlex.join(argv) if argv else "(called from Python)"


def render(title: str, sections: list[Section], argv: list[str] | None = None, created: datetime | None = None) -> str:
    """The page as a string. ``created`` defaults to now (UTC); pass a fixed time for identical bytes."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)
    page = []
    for s in sections:
        figs = []
        for f in s.figures:
            w, h = _png_size(f.png)
            figs.append({"b64": base64.b64encode(f.png).decode("ascii"), "alt": f.alt, "caption": f.caption, "width": w, "height": h, "wide": f.wide})
        page.append({
            "heading": s.heading,
            "paragraphs": [p.strip() for p in s.text.split("\n\n") if p.strip()],
            "figures": figs,
            "table_html": Markup(_table_html(s.table)) if s.table is not None and len(s.table.columns) else "",
            "table_note": s.table_note,
            "details": s.details,
        })
    when = (created or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    return env.from_string(TEMPLATE).render(title=title, version=__version__, created=when, command=command_line(argv), sections=page)


def check_path(path, flag: str = "--report") -> None:
    """Refuse a report path that is not an .html file, before any work is done."""
    from pathlib import Path

    from ..errors import InputError

    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise InputError(None, flag, "a path ending in .html", str(path))


def write(path, title: str, sections: list[Section], argv: list[str] | None = None) -> None:
    """Render and write the page atomically."""
    from ..atomic import write_text

    write_text(path, render(title, sections, argv))

