"""The storage STORAGE_BACKEND names: a local directory (storage.py) or an S3 bucket (s3.py)."""

from __future__ import annotations

from backend.modules.file.settings import FileSettings
from backend.modules.file.storage import LocalStorage, Storage


def make_storage(settings: FileSettings) -> Storage:
    if settings.storage_backend == "s3":
        from backend.modules.file.s3 import S3Storage  # obstore loads only when it is used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.file_storage_dir)
