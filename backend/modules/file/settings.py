"""The file module's settings: where blobs live, how large an upload may be, quotas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from fastapi import Depends
from pydantic import Field, model_validator

from backend.core.config import PROJECT_ROOT, AppSettings
from backend.core.state import provided


class FileSettings(AppSettings):
    # Where blobs live: a local directory (one replica, or a shared volume) or an S3 bucket.
    storage_backend: Literal["local", "s3"] = "local"
    file_storage_dir: Path = PROJECT_ROOT / ".data" / "files"
    # S3-compatible object storage. Credentials are not settings: AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY, or the platform's workload identity (IRSA's AWS_ROLE_ARN and
    # AWS_WEB_IDENTITY_TOKEN_FILE, EKS Pod Identity, instance metadata).
    s3_bucket: str = ""
    s3_endpoint_url: str = ""  # MinIO, R2, GCS (https://storage.googleapis.com); empty: AWS
    s3_region: str = ""  # empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1
    s3_prefix: str = ""  # keys under this folder of the bucket
    # Downloads answer 307 to a presigned URL valid this long, instead of streaming through.
    s3_presigned_downloads: bool = False
    s3_presign_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)
    s3_timeout_seconds: int = Field(default=60, ge=1)
    # Uploads above the limit are refused while streaming.
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    # Bytes of files each user may keep (0 = no quota).
    storage_quota_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)

    # Blobs no row points to (a crash between blob and row, a delete the storage refused) are
    # removed every this many seconds where background work runs (BACKGROUND_IN_PROCESS, the
    # worker); 0: never (`python -m backend.modules.file.cleanup` runs it once). Only blobs
    # older than FILE_ORPHAN_MIN_AGE_SECONDS: younger ones may be uploads in flight.
    file_cleanup_seconds: float = Field(default=3600, ge=0)
    file_orphan_min_age_seconds: float = Field(default=3600, ge=1)

    @model_validator(mode="after")
    def _bucket_named(self) -> Self:
        if self.storage_backend == "s3" and not self.s3_bucket.strip():
            raise ValueError("STORAGE_BACKEND=s3 needs S3_BUCKET")
        return self


FileSettingsDep = Annotated[FileSettings, Depends(provided(FileSettings))]
