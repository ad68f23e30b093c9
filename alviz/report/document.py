"""A report document: blocks (headings, paragraphs, tables, figures, raw HTML) rendered both as
Markdown and as one self-contained HTML page (images inlined, the stylesheet from
``assets/report.css`` inlined), and the writer of an experiment's report files.

What this is not: no tables' contents (``tables``), no viewer (``viewer``), no analysis.
"""
from __future__ import annotations

import base64
import html
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


def html_table(head, body, best=()) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(body):
        out.append("<tr>" + "".join(
            f"<td class=\"best\">{html.escape(c)}</td>" if (i, j) in best else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


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
                out.append(f"<figure id=\"{b[1]}\"><img alt=\"{b[1]}\" src=\"{src}\">"
                           f"<figcaption>{html.escape(b[3])}</figcaption></figure>")
            elif b[0] == "raw":
                out.append(b[1])
        out.append(f"<script type=\"application/json\" id=\"alviz-data\">{data_json}</script>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def write_report(folder: Path, doc: Doc, rows_all: list[dict], payload: dict) -> None:
    write_text_atomic(folder / "metrics.csv", csv_text(rows_all, CSV_COLUMNS))
    write_text_atomic(folder / "metrics.json", to_json(payload))
    write_text_atomic(folder / "report.md", doc.markdown())
    write_text_atomic(folder / "report.html", doc.html(script_json(payload)))
