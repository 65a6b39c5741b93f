"""Cut a document into overlapping chunks that end at natural boundaries where possible."""

from __future__ import annotations

# Preferred cut points, best first: paragraph, line, sentence, word.
_BOUNDARIES = ("\n\n", "\n", ". ", "? ", "! ", " ")


def split_text(text: str, *, size: int, overlap: int) -> list[str]:
    """Chunks of at most `size` characters; consecutive chunks share about `overlap`."""
    if overlap >= size:
        raise ValueError("overlap must be smaller than size")
    text = text.strip()
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            end = _cut(text, start, end, size)
        chunk = text[start:end].strip()
        if chunk:
            chunks.append(chunk)
        if end >= len(text):
            break
        next_start = max(end - overlap, start + 1)
        # Start the next chunk on a word, not in the middle of one.
        space = text.find(" ", next_start, end)
        start = space + 1 if overlap and space != -1 else next_start
    return chunks


def _cut(text: str, start: int, end: int, size: int) -> int:
    floor = start + size // 2  # never cut so early that chunks become tiny
    for boundary in _BOUNDARIES:
        at = text.rfind(boundary, floor, end)
        if at != -1:
            return at + len(boundary)
    return end
