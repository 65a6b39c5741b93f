"""Read a multipart upload as a stream: the file part's bytes go to storage as they arrive."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from backend.modules.file.exceptions import BadUpload

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")

Event = tuple[str, object]


@dataclass
class IncomingFile:
    filename: str
    content_type: str
    chunks: AsyncIterator[bytes]


def clean_filename(raw: str) -> str:
    """The client's name without any path, control characters or surrounding blanks."""
    name = re.split(r"[\\/]", raw)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    return name[:255] or "upload"


def clean_content_type(raw: str | None) -> str:
    media_type = (raw or "").split(";")[0].strip().lower()
    # RFC 6838 caps each half at 127 characters; the column holds 255.
    if len(media_type) <= 255 and _MEDIA_TYPE.match(media_type):
        return media_type
    return "application/octet-stream"


async def _events(request: Request, boundary: bytes) -> AsyncIterator[Event]:
    """The parser's callbacks as a stream of events, fed from the request body as it arrives."""
    pending: list[Event] = []
    headers: dict[bytes, bytes] = {}
    field, value = bytearray(), bytearray()

    def on_header_end() -> None:
        headers[bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": headers.clear,
            "on_header_field": lambda data, start, end: field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: value.extend(data[start:end]),
            "on_header_end": on_header_end,
            "on_headers_finished": lambda: pending.append(("headers", dict(headers))),
            "on_part_data": lambda data, start, end: pending.append(("data", data[start:end])),
            "on_part_end": lambda: pending.append(("end", None)),
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for event in pending:
                yield event
            pending.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise BadUpload(f"Malformed multipart body: {exc}") from None
    for event in pending:
        yield event


async def read_file_field(request: Request, field: str = "file") -> IncomingFile:
    """Advance to the file part named `field`; its bytes are read lazily from `chunks`."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise BadUpload()
    events = _events(request, boundary)

    async for kind, payload in events:
        if kind != "headers":
            continue
        assert isinstance(payload, dict)
        _, disposition = parse_options_header(payload.get(b"content-disposition", b""))
        if disposition.get(b"name") == field.encode() and b"filename" in disposition:
            filename = disposition[b"filename"].decode("utf-8", "replace")
            part_type = payload.get(b"content-type", b"").decode("latin-1")
            return IncomingFile(
                clean_filename(filename), clean_content_type(part_type), _data(events)
            )
    raise BadUpload()


async def _data(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for kind, payload in events:
        if kind == "data":
            assert isinstance(payload, bytes)
            yield payload
        elif kind == "end":
            async for _ in events:  # the rest of the body (other fields) is read and ignored
                pass
            return
    raise BadUpload("The upload ended before the file did")
