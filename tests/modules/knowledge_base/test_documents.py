"""Documents from real files through the API: PDF, DOCX, HTML and Markdown, with where each
chunk came from; a file that cannot be read ends `failed` with the reason, no chunk stored,
and a type that cannot be a document is refused at once (415)."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.modules.knowledge_base.models import Chunk, Document
from tests.modules.knowledge_base.documents import docx, pdf
from tests.modules.knowledge_base.ingest import add_document
from tests.modules.knowledge_base.test_knowledge_base import KBS, make_kb
from tests.modules.user.factories import user_with_token

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def document_from(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    kb: str,
    name: str,
    content: bytes,
    content_type: str,
) -> httpx.Response:
    uploaded = await client.post(
        "/api/v1/files", headers=headers, files={"file": (name, content, content_type)}
    )
    assert uploaded.status_code == 201, uploaded.text
    return await add_document(client, headers, f"{KBS}/{kb}", {"file_id": uploaded.json()["id"]})


async def best(
    client: httpx.AsyncClient, headers: dict[str, str], kb: str, query: str
) -> dict[str, object]:
    response = await client.post(
        f"{KBS}/{kb}/search", headers=headers, json={"query": query, "top_k": 1}
    )
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()["results"][0]
    return result


async def test_a_pdf_keeps_its_pages_and_bookmarks(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    content = pdf(
        [
            "The handbook of the observatory.\nIt describes the telescopes.",
            "Cleaning the mirror: use distilled water and a soft cloth.",
            "Calibrating the spectrograph takes a lamp of known lines.",
        ],
        outline=[("Handbook", 0, 0), ("Maintenance", 1, 1), ("Calibration", 2, 1)],
    )
    document = await document_from(client, headers, kb, "handbook.pdf", content, PDF)
    assert document.json()["status"] == "ready", document.text
    assert document.json()["chunk_count"] == 3  # a chunk never spans two pages

    found = await best(client, headers, kb, "how do I clean the mirror")
    assert (found["page"], found["section"]) == (2, "Handbook > Maintenance")
    assert "distilled water" in str(found["text"])
    found = await best(client, headers, kb, "spectrograph lamp")
    assert (found["page"], found["section"]) == (3, "Handbook > Calibration")


async def test_a_pdf_page_with_several_bookmarks_is_cut_at_their_titles(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """A chapter and its first section start on one page: each keeps its own text, and the
    last bookmark of a page covers the next page's text until another starts."""
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    content = pdf(
        [
            "Chapter 1 Getting started\nThis chapter introduces the telescope.\n"
            "1.1 Installing\nBolt the mount to the pier.",
            "Level the mount with the bubble gauge.\n1.2 Aligning\nPoint it at Polaris.",
        ],
        outline=[
            ("Chapter 1 Getting started", 0, 0),
            ("1.1 Installing", 0, 1),
            ("1.2 Aligning", 1, 1),
        ],
    )
    document = await document_from(client, headers, kb, "manual.pdf", content, PDF)
    assert document.json()["status"] == "ready", document.text

    chapter = "Chapter 1 Getting started"
    for query, page, section in (
        ("what does this chapter introduce", 1, chapter),
        ("bolt the mount to the pier", 1, f"{chapter} > 1.1 Installing"),
        ("level the mount with the bubble gauge", 2, f"{chapter} > 1.1 Installing"),
        ("point it at Polaris", 2, f"{chapter} > 1.2 Aligning"),
    ):
        found = await best(client, headers, kb, query)
        assert (found["page"], found["section"]) == (page, section), query


async def test_a_pdf_with_an_empty_password_is_read(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """Encrypted only to restrict printing or copying: it opens without a password."""
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    content = pdf(["Restricted but readable text."], password="")
    document = await document_from(client, headers, kb, "r.pdf", content, PDF)
    assert document.json()["status"] == "ready", document.text


async def test_docx_html_and_markdown_keep_their_heading_paths(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    word = docx(
        [
            ("h1", "Operations manual"),
            ("p", "This manual covers the pumping station."),
            ("h2", "Valves"),
            ("p", "Close the inlet valve before opening the drain."),
            ("table", [["Valve", "Torque"], ["Inlet", "40 Nm"]]),
        ]
    )
    html = (
        b"<html><head><title>x</title><script>var secret = 'tokens in scripts';</script></head>"
        b"<body><nav>Home</nav><h1>Recipes</h1><h2>Bread</h2><p>Knead the dough for ten "
        b"minutes &amp; let it rise.</p><h2>Soup</h2><p>Simmer the lentils.</p></body></html>"
    )
    markdown = (
        b"# Garden\n\n## Roses\n\nPrune roses in early spring.\n\n```\n# not a heading\n```\n"
    )
    for name, content, content_type in (
        ("manual.docx", word, DOCX),
        ("recipes.html", html, "text/html"),
        ("garden.md", markdown, "text/markdown"),
    ):
        document = await document_from(client, headers, kb, name, content, content_type)
        assert document.json()["status"] == "ready", (name, document.text)

    found = await best(client, headers, kb, "inlet valve drain")
    assert (found["page"], found["section"]) == (None, "Operations manual > Valves")
    found = await best(client, headers, kb, "inlet torque")
    assert "Inlet | 40 Nm" in str(found["text"])  # table rows are text too
    found = await best(client, headers, kb, "knead dough")
    assert found["section"] == "Recipes > Bread"
    found = await best(client, headers, kb, "prune roses")
    assert found["section"] == "Garden > Roses"
    secrets = await client.post(
        f"{KBS}/{kb}/search", headers=headers, json={"query": "secret tokens", "mode": "keyword"}
    )
    assert secrets.json()["results"] == []  # a script is not text


def zip_bomb() -> bytes:
    """A valid-looking DOCX zip whose one part inflates 1000-fold."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", b"<" + b" " * 5_000_000 + b">")
    return out.getvalue()


@pytest.mark.settings(max_document_pages=2)
async def test_files_that_cannot_be_read_are_refused_with_the_reason(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    _, headers = await user_with_token(client, session)
    kb = await make_kb(client, headers)
    cases = [
        ("locked.pdf", pdf(["Secret plans."], password="hunter2"), PDF, "encrypted"),
        ("scan.pdf", pdf([None, None]), PDF, "no text layer"),
        ("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog", PDF, "could not be read as a PDF"),
        ("long.pdf", pdf(["a", "b", "c"]), PDF, "3 pages; the limit is 2"),
        ("broken.docx", b"PK\x03\x04 not really a zip", DOCX, "could not be read as DOCX"),
        ("bomb.docx", zip_bomb(), DOCX, "inflates past"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "text/plain", "not UTF-8"),
    ]
    for name, content, content_type, reason in cases:
        document = await document_from(client, headers, kb, name, content, content_type)
        assert document.json()["status"] == "failed", (name, document.text)
        assert reason in document.json()["error"], (name, document.json())
        assert document.json()["chunk_count"] == 0
    image = await document_from(client, headers, kb, "a.png", b"\x89PNG....", "image/png")
    assert image.status_code == 415
    assert "PDF, DOCX, HTML, Markdown and plain text" in image.json()["detail"]

    assert await session.scalar(select(func.count()).select_from(Document)) == len(cases)
    assert await session.scalar(select(func.count()).select_from(Chunk)) == 0
