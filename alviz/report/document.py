"""A report document: blocks (headings, paragraphs, tables, figures, raw HTML) rendered both as
Markdown and as one self-contained HTML page (images inlined, the stylesheet from
``assets/report.css`` inlined), and the writer of an experiment's report files.

What this is not: no tables' contents (``tables``), no viewer (``viewer``), no analysis.
"""
from __future__ import annotations

import base64
import html
import os
import re
import struct
from functools import cache
from importlib import resources
from pathlib import Path

from ..checkpoint import write_text_atomic
from .files import csv_text, to_json
from .options import CSV_COLUMNS


@cache
def asset(name: str) -> str:
    """The text of ``alviz/report/assets/<name>`` (shipped as package data), read once."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def md_table(head, body, best=()) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for i, row in enumerate(body):
        cells = [f"**{c}**" if (i, j) in best else c for j, c in enumerate(row)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


NUMERIC = re.compile(r"^(?:[-+−]?\d|[-–]$|\[|nan|inf)")


def html_table(head, body, best=()) -> str:
    """A table in a horizontally scrollable box (the page never scrolls sideways); a column is
    left-aligned, header included, when one of its cells is not a number."""
    left = [any(c and not NUMERIC.match(c) for c in (row[j] for row in body if j < len(row)))
            for j in range(len(head))]

    def cell(tag, text, j, extra=""):
        cls = " ".join(x for x in ("l" if left[j] else "", extra) if x)
        attr = f' class="{cls}"' if cls else ""
        return f"<{tag}{attr}>{html.escape(text)}</{tag}>"

    out = ["<div class=\"table\"><table><thead><tr>" + "".join(cell("th", h, j) for j, h in enumerate(head))
           + "</tr></thead><tbody>"]
    for i, row in enumerate(body):
        out.append("<tr>" + "".join(cell("td", c, j, "best" if (i, j) in best else "") for j, c in enumerate(row))
                   + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def png_css_width(png: bytes, dpi: int = 300, px_per_inch: int = 110) -> int:
    """The on-screen width (CSS px) of a PNG saved at ``dpi``: every figure's 8 pt text then
    shows at the same size, whatever the figure's width."""
    width = struct.unpack(">I", png[16:20])[0] if png[:8] == b"\x89PNG\r\n\x1a\n" else dpi * 6
    return int(round(width / dpi * px_per_inch))


def script_json(obj) -> str:
    """JSON safe inside <script>: no '</' and no HTML comment openers."""
    return to_json(obj).replace("</", "<\\/").replace("<!--", "<\\!--")


class Doc:
    """Blocks rendered both as Markdown and as self-contained HTML."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def h(self, text):
        self.blocks.append(("h", text))

    def p(self, text, md=None):
        self.blocks.append(("p", text, md))

    def table(self, head, body, best=()):
        self.blocks.append(("table", head, body, set(best)))

    def fig(self, stem, png: bytes, caption: str):
        self.blocks.append(("fig", stem, png, caption))

    def raw_html(self, text, md=None):
        self.blocks.append(("raw", text, md))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += [f"## {b[1]}", ""]
            elif b[0] == "p":
                out += [b[2] if b[2] is not None else b[1], ""]
            elif b[0] == "table":
                out += [md_table(b[1], b[2], b[3]), ""]
            elif b[0] == "fig":
                out += [f"![{b[1]}]({b[1]}.png)", "", f"*{b[3]}* ([PDF]({b[1]}.pdf))", ""]
            elif b[0] == "raw" and b[2]:
                out += [b[2], ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self, data_json: str) -> str:
        out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
               f"<title>{html.escape(self.title)}</title><style>{asset('report.css')}</style></head><body>",
               f"<h1>{html.escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h2>{html.escape(b[1])}</h2>")
            elif b[0] == "p":
                out.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "table":
                out.append(html_table(b[1], b[2], b[3]))
            elif b[0] == "fig":
                src = "data:image/png;base64," + base64.b64encode(b[2]).decode("ascii")
                out.append(f"<figure id=\"{b[1]}\"><img alt=\"{b[1]}\" src=\"{src}\" "
                           f"style=\"width:{png_css_width(b[2])}px\">"
                           f"<figcaption>{html.escape(b[3])} <a href=\"{b[1]}.pdf\">PDF</a> \u00b7 "
                           f"<a href=\"{b[1]}.png\">PNG</a></figcaption></figure>")
            elif b[0] == "raw":
                out.append(b[1])
        out.append(f"<script type=\"application/json\" id=\"alviz-data\">{data_json}</script>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def shown_path(p) -> str:
    """A path as a page may show it: relative to the working folder when it lies below it,
    else only its last component (a report holds no absolute path of the machine it was made
    on, and stays true when its folder moves)."""
    p = Path(p)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return p.name or str(p)


def strip_paths(obj):
    """``obj`` (JSON-able) with every absolute path string (also ``npz:/...``) made ``shown_path``."""
    if isinstance(obj, dict):
        return {k: strip_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strip_paths(v) for v in obj]
    if isinstance(obj, str):
        if obj.startswith("npz:") and os.path.isabs(obj[4:]):
            return "npz:" + shown_path(obj[4:])
        if os.path.isabs(obj):
            return shown_path(obj)
    return obj


def files_line(figs) -> tuple[str, str]:
    """(HTML, Markdown) links to the files written beside the report."""
    names = ["report.md", "metrics.csv", "metrics.json"] + [f"{stem}.pdf" for stem in figs]
    links = " ".join(f"<a href=\"{html.escape(n)}\">{html.escape(n)}</a>" for n in names)
    return (f"<p class=\"note files\">Files beside this page: {links}</p>",
            "Files: " + ", ".join(f"[{n}]({n})" for n in ["report.html", "metrics.csv", "metrics.json"]))


def write_report(folder: Path, doc: Doc, rows_all: list[dict], payload: dict) -> None:
    write_text_atomic(folder / "metrics.csv", csv_text(rows_all, CSV_COLUMNS))
    write_text_atomic(folder / "metrics.json", to_json(payload))
    write_text_atomic(folder / "report.md", doc.markdown())
    write_text_atomic(folder / "report.html", doc.html(script_json(strip_paths(payload))))
