"""What a storage directory holds, as a test looks at it."""

from __future__ import annotations

from pathlib import Path


def files_in(directory: Path) -> list[Path]:
    """Every file under `directory` (blobs in a storage directory)."""
    return [path for path in directory.rglob("*") if path.is_file()]
