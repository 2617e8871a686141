"""A small document model rendered twice: Markdown (``report.md``) and self-contained HTML.

Kept apart from :mod:`rlbench.results.report` so what the report says and how it is typeset
change separately.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class Document:
    """Blocks (headings, paragraphs, lists, tables, images) rendered as Markdown and HTML.

    Text may use ``**bold**``, ```code``` and ``[text](url)``; the HTML embeds images as base64
    data URIs. Second-level headings get GitHub's anchors (``## Per load pattern`` is
    ``#per-load-pattern``), which :meth:`toc` links to.
    """

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def toc(self) -> None:
        """A table of contents here: a link to every second-level heading of the document."""
        self.blocks.append(("toc", None))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def lines(self, lines: Iterable[str]) -> None:
        """Markdown bullet lines (``- item``, ``  - sub-item``), kept as written."""
        self.blocks.append(("lines", list(lines)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("image", (Path(path), alt)))

    def _contents(self) -> list[str]:
        sections = [v[1] for k, v in self.blocks if k == "heading" and v[0] == 2]
        return [f"[{title}](#{anchor(title)})" for title in sections]

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "toc":
                out.append("**Contents:** " + " · ".join(self._contents()))
            if kind == "heading":
                out.append(f"{'#' * value[0]} {value[1]}")
            elif kind == "para":
                out.append(value)
            elif kind == "lines":
                out.append("\n".join(value))
            elif kind == "table":
                header, rows = value
                cells = [header, ["---"] * len(header), *rows]
                out.append(
                    "\n".join("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in cells)
                )
            elif kind == "image":
                out.append(f"![{value[1]}]({value[0].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "toc":
                links = "".join(f"<li>{_inline(link)}</li>" for link in self._contents())
                body.append(f'<nav class="toc"><strong>Contents</strong><ul>{links}</ul></nav>')
            elif kind == "heading" and value[0] == 2:
                body.append(f'<h2 id="{anchor(value[1])}">{_inline(value[1])}</h2>')
            elif kind == "heading":
                body.append(f"<h{value[0]}>{_inline(value[1])}</h{value[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "lines":
                body.append(_html_list(value))
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{_inline(c)}</th>" for c in header)
                trs = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(value[0].read_bytes()).decode("ascii")
                alt = html.escape(value[1])
                body.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{alt}</figcaption></figure>")  # fmt: skip
        return _HTML.format(title=html.escape(title), body="\n".join(body))


_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0; }} figcaption {{ color: #666; font-size: 0.85em; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
nav.toc ul {{ display: flex; flex-wrap: wrap; gap: 0.2em 1.2em; list-style: none; padding: 0;
              margin: 0.3em 0 1em; }}
td strong {{ color: #0b5394; }}
</style></head>
<body>
{body}
</body></html>
"""


def anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    out = html.escape(str(text), quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def _html_list(lines: list[str]) -> str:
    out, depth = [], 0
    for line in lines:
        level = 1 + (len(line) - len(line.lstrip(" "))) // 2
        while depth < level:
            out.append("<ul>")
            depth += 1
        while depth > level:
            out.append("</ul>")
            depth -= 1
        out.append(f"<li>{_inline(line.strip().removeprefix('- '))}</li>")
    out.extend("</ul>" * depth)
    return "".join(out)
