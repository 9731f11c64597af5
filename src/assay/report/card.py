"""Model card documents -> Markdown (with YAML front matter) and one self-contained HTML page.

:mod:`assay.govern.card` decides what a card says; this module only lays it out. A card is a
:class:`CardDocument`: sections of blocks (paragraphs, key-value facts, tables, lists, TODO marks). Both
renderers read the same document, so MODEL_CARD.md and model_card.html never disagree. The HTML page reuses
the report's stylesheet (``templates/report.html.j2``), has no scripts and references nothing outside itself.
Text in backticks is code; everything else is escaped (HTML) or written as given (Markdown: the provider's
facts may use Markdown on purpose).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Literal, Union

__all__ = ["CardDocument", "CardSection", "Cell", "Facts", "Items", "Link", "Paragraph", "Table", "Todo",
           "render_card_html", "render_card_markdown", "slug"]


@dataclass(frozen=True)
class Todo:
    """A fact the provider has not given: rendered as a visible TODO naming the key of ``file`` (card.yaml,
    datasheet.yaml) that would give it."""

    key: str
    what: str
    file: str = "card.yaml"

    def text(self) -> str:
        return f"TODO: {self.what} ({self.file} `{self.key}`)"


@dataclass(frozen=True)
class Link:
    """A link to another document (a relative path such as ``DATASHEET.md``, or a file path): ``[text](href)``
    in Markdown, ``<a href>`` in HTML."""

    text: str
    href: str


@dataclass(frozen=True)
class Cell:
    """A table cell: ``text`` (a number already formatted, or words), an optional interval, and whether it is
    numeric (right-aligned) or code (a pointer, a hash)."""

    text: str
    ci: str = ""
    numeric: bool = False
    code: bool = False


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: Literal["text", "note", "provider"] = "text"


@dataclass(frozen=True)
class Facts:
    """Key-value rows (label, value, source); a value may be a :class:`Todo` or a :class:`Link`."""

    rows: Sequence[tuple[str, str | Todo | Link, str]]


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""


@dataclass(frozen=True)
class Items:
    items: Sequence[str | Todo]


Block = Union[Paragraph, Facts, Table, Items, Todo, "CardSection"]


@dataclass(frozen=True)
class CardSection:
    title: str
    anchor: str
    blocks: Sequence[Block] = field(default_factory=list)


@dataclass(frozen=True)
class CardDocument:
    title: str
    subtitle: str
    sections: Sequence[CardSection]
    generator: str = "Assay"


# ----------------------------------------------------------------------------------------------- Markdown


def _md_text(text: str) -> str:
    """Our text for Markdown: ``<`` outside code spans escaped, so a name such as ``<in-memory Net>`` is not read
    as an HTML tag (and hidden) by the Hub or GitHub."""
    parts = re.split(r"(`[^`]+`)", text)
    return "".join(p if i % 2 else p.replace("<", "\\<") for i, p in enumerate(parts))


def _md_cell(text: str) -> str:
    return _md_text(text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip())


def _md_value(value: str | Todo | Link) -> str:
    if isinstance(value, Link):
        text = value.text.replace("[", "(").replace("]", ")")
        href = value.href.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
        return f"[{text}]({href})"
    return f"**{value.text()}**" if isinstance(value, Todo) else value


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell_md(cell: Cell) -> str:
    text = f"`{cell.text}`" if cell.code and cell.text else cell.text
    return f"{text} {cell.ci}" if cell.ci else text


def _md_blocks(blocks: Sequence[Block], level: int) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, CardSection):
            out += [f"{'#' * level} {_md_text(block.title)}", "", *_md_blocks(block.blocks, level + 1)]
            continue
        if isinstance(block, Paragraph):
            text = block.text if block.kind == "provider" else _md_text(block.text)
            out.append(f"> {text}" if block.kind == "note" else text)
        elif isinstance(block, Todo):
            out.append(f"**{block.text()}**")
        elif isinstance(block, Facts):
            out += _md_table(["", "value", "source"],
                             [[f"**{label}**", _md_value(value), source] for label, value, source in block.rows])
        elif isinstance(block, Items):
            out += [f"- {_md_value(item) if isinstance(item, Todo) else _md_text(item)}" for item in block.items]
        elif isinstance(block, Table):
            if block.caption:
                out += [f"*{block.caption}*", ""]
            out += _md_table(block.columns, [[_cell_md(c) for c in row] for row in block.rows])
        out.append("")
    return out


def slug(title: str) -> str:
    """The anchor GitHub and the Hugging Face Hub give a heading (github-slugger: lower case, punctuation
    dropped, spaces to hyphens), so the contents links work in both renderings."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def render_card_markdown(doc: CardDocument, front_matter: str) -> str:
    """MODEL_CARD.md: ``front_matter`` (YAML, without the ``---`` fences) then the document."""
    lines = ["---", front_matter.rstrip("\n"), "---", "", f"# {_md_text(doc.title)}", "", _md_text(doc.subtitle),
             "", "## Contents", ""]
    lines += [f"{i}. [{s.title}](#{slug(s.title)})" for i, s in enumerate(doc.sections, start=1)] + [""]
    for section in doc.sections:
        lines += [f"## {section.title}", "", *_md_blocks(section.blocks, 3)]
    return "\n".join(lines).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------------------------- HTML

_CARD_CSS = """
.card-page main { padding-top: 8px; }
.card-page section.check h2 { margin-bottom: 8px; }
.card-page section.check h3 { margin-top: 18px; }
.card-page p { margin: 8px 0; max-width: 980px; }
.card-page p.provider { white-space: pre-wrap; }
.card-page .todo { color: var(--fail); background: var(--fail-bg); font-weight: 600; padding: 1px 6px;
  border-radius: 4px; }
.card-page blockquote { margin: 8px 0; padding: 6px 12px; border-left: 4px solid var(--line); color: var(--muted); }
.card-page nav.sections a { font-size: 13px; }
.card-page td code { white-space: nowrap; overflow-wrap: normal; }
.card-page caption { text-align: left; color: var(--muted); font-size: 12px; padding: 4px 0; caption-side: top; }
"""
_FALLBACK_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
.wrap { max-width: 1240px; margin: 0 auto; padding: 0 20px; }
section.check { background: #fff; border: 1px solid #d1d9e0; border-radius: 8px; padding: 16px 18px; margin: 18px 0; }
table { border-collapse: collapse; font-size: 13px; } th, td { text-align: left; padding: 5px 10px;
  border-bottom: 1px solid #d1d9e0; vertical-align: top; } td.num { text-align: right; }
code { font-family: ui-monospace, monospace; font-size: 12px; }
:root { --fail: #cf222e; --fail-bg: #ffebe9; --line: #d1d9e0; --muted: #59636e; }
"""


@lru_cache(maxsize=1)
def _report_css() -> str:
    """The report page's stylesheet (one look for every Assay page); a minimal one if it cannot be read."""
    try:
        template = resources.files("assay.report").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    except (OSError, ValueError):
        return _FALLBACK_CSS
    match = re.search(r"<style>(.*?)</style>", template, re.S)
    css = match.group(1) if match else ""
    if "{{" in css or "{%" in css or not css.strip():
        return _FALLBACK_CSS
    return css


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    parts = re.split(r"`([^`]+)`", text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _html_value(value: str | Todo | Link) -> str:
    if isinstance(value, Link):
        return f'<a href="{html.escape(value.href)}">{_inline(value.text)}</a>'
    if isinstance(value, Todo):
        return f'<span class="todo">{_inline(value.text())}</span>'
    return _inline(value)


def _html_cell(cell: Cell) -> str:
    body = f"<code>{html.escape(cell.text)}</code>" if cell.code and cell.text else _inline(cell.text)
    if cell.ci:
        body += f' <span class="ci">{html.escape(cell.ci)}</span>'
    return f'<td class="num">{body}</td>' if cell.numeric else f"<td>{body}</td>"


def _html_blocks(blocks: Sequence[Block], level: int) -> list[str]:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, CardSection):
            out += [f'<h{level} id="{html.escape(block.anchor)}">{_inline(block.title)}</h{level}>',
                    *_html_blocks(block.blocks, min(level + 1, 6))]
        elif isinstance(block, Paragraph):
            if block.kind == "note":
                out.append(f"<blockquote>{_inline(block.text)}</blockquote>")
            else:
                out.append(f'<p class="{block.kind}">{_inline(block.text)}</p>')
        elif isinstance(block, Todo):
            out.append(f"<p>{_html_value(block)}</p>")
        elif isinstance(block, Facts):
            out.append('<div class="tablebox"><table><tbody>')
            out += [f"<tr><th>{_inline(label)}</th><td>{_html_value(value)}</td><td>{_inline(source)}</td></tr>"
                    for label, value, source in block.rows]
            out.append("</tbody></table></div>")
        elif isinstance(block, Items):
            out.append("<ul>" + "".join(f"<li>{_html_value(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            caption = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
            head = "".join(f"<th>{_inline(c)}</th>" for c in block.columns)
            body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows)
            out.append(f'<div class="tablebox"><table>{caption}<thead><tr>{head}</tr></thead>'
                       f"<tbody>{body}</tbody></table></div>")
    return out


def render_card_html(doc: CardDocument) -> str:
    """model_card.html: one self-contained page (inline CSS, no scripts, no external references)."""
    nav = "".join(f'<a href="#{html.escape(slug(s.title))}">{_inline(s.title)}</a>' for s in doc.sections)
    body = []
    for section in doc.sections:
        body += [f'<section class="check" id="{html.escape(slug(section.title))}">',
                 f"<h2>{_inline(section.title)}</h2>", *_html_blocks(section.blocks, 3), "</section>"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="{html.escape(doc.generator)}">',
        f"<title>{html.escape(doc.title)}</title>",
        f"<style>{_report_css()}{_CARD_CSS}</style>", "</head>", '<body class="card-page">',
        '<header class="top"><div class="wrap">', f"<h1>{_inline(doc.title)}</h1>",
        f'<div class="muted">{_inline(doc.subtitle)}</div>', f'<nav class="sections">{nav}</nav>',
        "</div></header>", '<main><div class="wrap">', *body, "</div></main>", "</body>", "</html>",
    ]
    return "\n".join(parts) + "\n"
