"""The file module's settings: where blobs live, how large an upload may be, quotas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends
from pydantic import Field

from backend.core.config import PROJECT_ROOT, AppSettings
from backend.core.state import provided


class FileSettings(AppSettings):
    # Local directory storage; uploads above the limit are refused while streaming.
    file_storage_dir: Path = PROJECT_ROOT / ".data" / "files"
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    # Bytes of files each user may keep (0 = no quota).
    storage_quota_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)


FileSettingsDep = Annotated[FileSettings, Depends(provided(FileSettings))]
