"""Real PDF and DOCX files, made here: a PDF written object by object (Helvetica text, one
content stream a page), bookmarks and encryption added by pypdf; DOCX by python-docx."""

from __future__ import annotations

import io
from collections.abc import Sequence

from docx import Document as Docx
from pypdf import PdfReader, PdfWriter
from pypdf.generic import IndirectObject


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def pdf(
    pages: Sequence[str | None],
    *,
    outline: Sequence[tuple[str, int, int]] = (),
    password: str | None = None,
) -> bytes:
    """A PDF with one page per entry (None: a page with no text, as a scan has none).

    `outline`: bookmarks as (title, page index, depth); depth 1 sits under the last depth 0.
    `password`: encrypted with it ("" encrypts with an empty user password, as many PDFs are).
    """
    objects: dict[int, bytes] = {
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    }
    kids = []
    for i, text in enumerate(pages):
        page, content = 4 + 2 * i, 5 + 2 * i
        kids.append(f"{page} 0 R")
        lines = " ".join(f"({_escape(line)}) Tj T*" for line in (text or "").split("\n"))
        stream = (f"BT /F1 11 Tf 14 TL 40 800 Td {lines} ET" if text else "").encode("latin-1")
        objects[content] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
        objects[page] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content} 0 R >>"
        ).encode()
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, objects[number]))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for number in sorted(objects):
        out.write(b"%010d 00000 n \n" % offsets[number])
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    if not outline and password is None:
        return out.getvalue()

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(out.getvalue())))
    parents: list[IndirectObject] = []
    for title, page_index, depth in outline:
        parent = parents[depth - 1] if depth else None
        parents[depth:] = [
            writer.add_outline_item(title=title, page_number=page_index, parent=parent)
        ]
    if password is not None:
        writer.encrypt(password, algorithm="RC4-128")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    return encrypted.getvalue()


def docx(blocks: Sequence[tuple[str, str | list[list[str]]]]) -> bytes:
    """A DOCX of ("h1".."h3", title), ("p", text) and ("table", rows) blocks, in order."""
    document = Docx()
    for kind, value in blocks:
        if kind == "table":
            assert isinstance(value, list)
            table = document.add_table(rows=len(value), cols=len(value[0]))
            for row, cells in zip(table.rows, value, strict=True):
                for cell, text in zip(row.cells, cells, strict=True):
                    cell.text = text
        elif kind.startswith("h"):
            document.add_heading(str(value), level=int(kind[1:]))
        else:
            document.add_paragraph(str(value))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
