from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import RedirectResponse, StreamingResponse

from backend.core.errors import StorageFull, error_responses
from backend.core.pagination import PageDep
from backend.db.session import ReadSessionDep, SessionDep
from backend.modules.file import service
from backend.modules.file.dependencies import (
    MULTIPART_OVERHEAD,
    OwnedFile,
    StorageDep,
    UploadLimit,
    lifespan,
)
from backend.modules.file.exceptions import (
    BadUpload,
    FileTooLarge,
    QuotaExceeded,
    StorageUnavailable,
)
from backend.modules.file.schemas import FilePage, FileRead
from backend.modules.file.settings import FileSettingsDep
from backend.modules.file.upload import read_file_field
from backend.modules.user.dependencies import CurrentUser

router = APIRouter(prefix="/files", tags=["files"], lifespan=lifespan)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post(
    "",
    response_model=FileRead,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=UPLOAD_BODY,
    responses=error_responses(
        FileTooLarge, QuotaExceeded, BadUpload, StorageFull, StorageUnavailable
    ),
)
async def upload(
    request: Request,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    storage: StorageDep,
    settings: FileSettingsDep,
    limit: UploadLimit,
) -> FileRead:
    """Upload one file (multipart field `file`), streamed to storage; size and sha256 recorded.
    `Location` names it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise FileTooLarge(limit)
    incoming = await read_file_field(request)
    file = await service.create(
        session,
        owner=user,
        storage=storage,
        upload=incoming,
        max_size=limit,
        quota=settings.storage_quota_bytes,
    )
    response.headers["Location"] = str(request.url_for("get_file", file_id=file.id).path)
    return FileRead.model_validate(file)


@router.get("", response_model=FilePage, status_code=status.HTTP_200_OK)
async def list_files(
    session: ReadSessionDep,
    user: CurrentUser,
    page: PageDep,
) -> FilePage:
    """The caller's files, newest first."""
    return FilePage.of(await service.list(session, owner=user, page=page), page)


@router.get("/{file_id}", response_model=FileRead, status_code=status.HTTP_200_OK)
async def get_file(file: OwnedFile) -> FileRead:
    """One file's metadata."""
    return FileRead.model_validate(file)


@router.get(
    "/{file_id}/content",
    status_code=status.HTTP_200_OK,
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        307: {"description": "Fetch the bytes from the Location (S3_PRESIGNED_DOWNLOADS)"},
        **error_responses(StorageUnavailable),
    },
)
async def download(file: OwnedFile, storage: StorageDep) -> Response:
    """The file's bytes as an attachment with its content type: streamed, or a redirect to a
    short-lived presigned URL when the storage is S3 and S3_PRESIGNED_DOWNLOADS is on."""
    url = await storage.download_url(file.storage_key)
    if url is not None:
        return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    return StreamingResponse(
        await service.open_content(file=file, storage=storage),
        media_type=file.content_type,
        headers={
            **service.download_headers(file.filename, file.content_type),
            "Content-Length": str(file.size),
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.delete("/{file_id}", status_code=status.HTTP_204_NO_CONTENT, response_model=None)
async def delete_file(session: SessionDep, file: OwnedFile, storage: StorageDep) -> None:
    """Delete the file: its row, then its blob once that is committed."""
    await service.delete(session, file=file, storage=storage)
