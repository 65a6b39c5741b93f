"""Documents from files: PDF, DOCX, HTML, Markdown and plain text, cut into sections that keep
where they came from (the page, the heading path), so that search results can say it.

Every format is read by a maintained library or the standard library (pypdf: BSD; python-docx:
MIT; HTML: `html.parser`); none runs a program or fetches anything. What cannot be read is an
`UnreadableDocument` (422) that says why: encrypted, image-only, corrupt, more pages than
MAX_DOCUMENT_PAGES, more text than MAX_DOCUMENT_CHARS (a 6 KB PDF can draw millions of
characters), or a DOCX that inflates past its allowance (counted as it inflates, not as the zip
declares). Time and memory are bounded by where it runs (isolation.py); nothing here is slower
than linear in what it reads, but the libraries are not all so (pypdf on one large page).
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, ClassVar, Literal

from backend.modules.knowledge_base.exceptions import UnreadableDocument

Kind = Literal["pdf", "docx", "html", "markdown", "text"]

CONTENT_TYPES: dict[str, Kind] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
SUFFIXES: dict[str, Kind] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
}
# A DOCX is a zip: refuse one that inflates past this many times the file's own size (a few kB
# can expand to gigabytes; real documents stay well under 20x), or past MAX_INFLATED_BYTES (its
# XML becomes a tree about 20 times its size in memory).
MAX_INFLATION = 50
MAX_INFLATED_BYTES = 32 * 1024 * 1024
HEADING_SEPARATOR = " > "


@dataclass(frozen=True)
class Section:
    """A run of text from one place: its page (PDF) and the headings it sits under."""

    text: str
    page: int | None = None
    heading: str | None = None


def kind_of(content_type: str, filename: str) -> Kind | None:
    """The format, by content type; by the name's suffix when the type says nothing."""
    base = content_type.split(";")[0].strip().lower()
    if base in CONTENT_TYPES:
        return CONTENT_TYPES[base]
    if base in ("", "application/octet-stream"):
        suffix = filename[filename.rfind(".") :].lower() if "." in filename else ""
        return SUFFIXES.get(suffix)
    return None


def parse(kind: Kind, raw: bytes, *, max_pages: int, max_chars: int) -> list[Section]:
    """The file's sections, in reading order, empty ones left out. CPU-bound, and the cost of
    a hostile file is the parser's: call it through `isolation.Parsers`."""
    if kind == "pdf":
        sections = _pdf(raw, max_pages, max_chars)
    elif kind == "docx":
        sections = list(_docx(raw))
    else:
        text = _decode(raw, kind)
        sections = list(_html(text) if kind == "html" else _markdown(text))
    _check_length(sum(len(s.text) for s in sections), max_chars)
    return [s for s in sections if s.text.strip()]


def _check_length(chars: int, max_chars: int) -> None:
    if chars > max_chars:
        raise UnreadableDocument(
            f"The document holds more than {max_chars} characters of text (MAX_DOCUMENT_CHARS)"
        )


def _decode(raw: bytes, kind: Kind) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableDocument(f"The {kind} file is not UTF-8 text") from None
    if "\x00" in text:
        raise UnreadableDocument(f"The {kind} file holds NUL bytes: is it binary?")
    return text


def _pdf(raw: bytes, max_pages: int, max_chars: int) -> list[Section]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not _opens_without_password(reader):
            raise UnreadableDocument("The PDF is encrypted: upload it without a password")
        pages = len(reader.pages)
        if pages > max_pages:
            raise UnreadableDocument(
                f"The PDF has {pages} pages; the limit is {max_pages} (MAX_DOCUMENT_PAGES)"
            )
        headings = _outline_by_page(reader)
        sections: list[Section] = []
        heading = None
        chars = 0
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            for piece, covering in _at_bookmarks(text, headings.get(number, []), heading):
                sections.append(Section(piece, page=number, heading=covering))
                heading = covering
            chars += len(text)
            _check_length(chars, max_chars)  # before the next page is drawn
    except UnreadableDocument:
        raise
    except Exception as exc:  # a hostile or broken file can fail anywhere inside the parser
        raise UnreadableDocument(f"The file could not be read as a PDF ({reason(exc)})") from None
    if not any(s.text.strip() for s in sections):
        raise UnreadableDocument(
            "The PDF has no text layer (scanned pages are images): run OCR on it first"
        )
    return sections


def _opens_without_password(reader: Any) -> bool:
    """Many PDFs are encrypted with an empty password (only to restrict printing or copying)."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # AES needs the `cryptography` package: unreadable here either way
        return False


def _at_bookmarks(
    text: str, paths: list[str], carried: str | None
) -> Iterator[tuple[str, str | None]]:
    """A page's text cut where its bookmarks' titles start, each piece with the bookmark path
    that covers it: the text before the first title keeps the heading carried from the pages
    before, and the last bookmark carries on past the page. A title the text does not show (it
    was extracted otherwise) takes over where the cutting has got to. A title counts where a
    line starts with it, as a heading's does, in any case."""
    current, start = carried, 0
    for path in paths:
        # Its first words are enough to find it (and bound what a hostile outline costs).
        title = path.rsplit(HEADING_SEPARATOR, 1)[-1].split()[:12]
        found = (
            re.compile(r"^[ \t]*" + r"\s+".join(map(re.escape, title)), _HEADING).search(
                text, start
            )
            if title
            else None
        )
        if found is not None and found.start() > start:
            if text[start : found.start()].strip():
                yield text[start : found.start()], current
            start = found.start()
        current = path
    yield text[start:], current


_HEADING = re.IGNORECASE | re.MULTILINE


def _outline_by_page(reader: Any) -> dict[int, list[str]]:
    """The bookmark paths that start on each page, in the outline's order (if it has one)."""
    found: dict[int, list[str]] = {}

    def walk(items: list[Any], path: tuple[str, ...]) -> None:
        current = path
        for item in items:
            if isinstance(item, list):
                walk(item, current)
                continue
            current = (*path, str(item.title).strip())
            page = reader.get_destination_page_number(item)
            if page is not None and page >= 0:
                found.setdefault(page + 1, []).append(HEADING_SEPARATOR.join(current))

    try:
        walk(reader.outline, ())
    except Exception:  # a broken outline is no reason to refuse the text
        return {}
    return found


def _docx(raw: bytes) -> Iterator[Section]:
    from docx import Document as Docx
    from docx.table import Table

    try:
        _check_inflation(raw)
        body = list(Docx(io.BytesIO(raw)).iter_inner_content())
    except UnreadableDocument:
        raise
    except Exception as exc:
        raise UnreadableDocument(
            f"The file could not be read as DOCX ({reason(exc)}; password-protected files are "
            f"not DOCX inside)"
        ) from None
    headings: list[str] = []
    lines: list[str] = []
    for block in body:
        if isinstance(block, Table):
            lines += [" | ".join(cell.text.strip() for cell in row.cells) for row in block.rows]
            continue
        level = _heading_level(block.style.name if block.style is not None else "")
        if level is None:
            lines.append(block.text)
            continue
        yield Section("\n".join(lines), heading=_path(headings))
        lines = [block.text]  # the heading's words stay searchable in its section
        headings = [*headings[: level - 1], block.text.strip()]
    yield Section("\n".join(lines), heading=_path(headings))


def _check_inflation(raw: bytes) -> None:
    """Inflate every member, counting bytes as they come (a zip's declared sizes are the
    attacker's to write); refuse past the allowance."""
    allowance = min(MAX_INFLATION * len(raw), MAX_INFLATED_BYTES)
    inflated = 0
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                while chunk := member.read(64 * 1024):
                    inflated += len(chunk)
                    if inflated > allowance:
                        raise UnreadableDocument(
                            f"The DOCX inflates past {allowance} bytes "
                            f"({MAX_INFLATION} times its size, at most {MAX_INFLATED_BYTES})"
                        )


def _heading_level(style: str) -> int | None:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else None


def _path(headings: list[str]) -> str | None:
    kept = [h for h in headings if h]
    return HEADING_SEPARATOR.join(kept) if kept else None


_FENCE = re.compile(r"^\s*(```|~~~)")


def _atx_heading(line: str) -> tuple[int, str] | None:
    """`## Title ##` -> (2, "Title"). Written out, not a regex: the pattern it replaces
    (`^(#{1,6})\\s+(.+?)\\s*#*\\s*$`) backtracked cubically on `# a` and thousands of spaces."""
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or len(line) == level or not line[level].isspace():
        return None
    title = line[level:].strip()
    title = title.rstrip("#").rstrip() or title  # a closing run of #, as the pattern dropped it
    return (level, title) if title else None


def _markdown(text: str) -> Iterator[Section]:
    """Sections between ATX headings (`## Install`); a `#` inside a code fence is code."""
    headings: list[str] = []
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else _atx_heading(line)
        if heading is None:
            lines.append(line)
            continue
        yield Section("\n".join(lines), heading=_path(headings))
        lines = [line]  # the heading's words stay searchable in its section
        level, title = heading
        headings = [*headings[: level - 1], *[""] * (level - 1 - len(headings)), title]
    yield Section("\n".join(lines), heading=_path(headings))


class _HtmlText(HTMLParser):
    """Visible text in reading order, cut at headings; scripts, styles and the head skipped."""

    SKIPPED = frozenset({"script", "style", "noscript", "template", "head", "svg"})
    BLOCKS = frozenset(
        {"p", "div", "br", "li", "tr", "pre", "blockquote", "section", "article", "table",
         "ul", "ol", "dt", "dd", "hr", "main", "header", "footer", "figcaption"}
    )  # fmt: skip
    HEADINGS: ClassVar[dict[str, int]] = {f"h{n}": n for n in range(1, 7)}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.headings: list[str] = []
        self.parts: list[str] = []
        self.heading_parts: list[str] | None = None
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED:
            self.skipping += 1
        elif tag in self.HEADINGS and not self.skipping:
            self.flush()
            self.heading_parts = []
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.HEADINGS and self.heading_parts is not None:
            title = " ".join("".join(self.heading_parts).split())
            level = self.HEADINGS[tag]
            self.headings = [*self.headings[: level - 1], title]
            self.parts.append(title + "\n")
            self.heading_parts = None
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if self.heading_parts is not None:
            self.heading_parts.append(data)
        else:
            self.parts.append(data)

    def flush(self) -> None:
        text = re.sub(r"[ \t]*\n\s*", "\n", "".join(self.parts)).strip()
        self.sections.append(Section(text, heading=_path(self.headings)))
        self.parts = []


def _html(text: str) -> Iterator[Section]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    parser.flush()
    yield from parser.sections


def reason(exc: BaseException) -> str:
    """An exception in one line for people: its type and the first line of its message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message[:200]}" if message else type(exc).__name__
