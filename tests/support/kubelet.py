"""Start a pod from a rendered Deployment as local processes, the way a kubelet would.

The containers' commands are used exactly as the manifest writes them. Their environment is what
the pod would get: the ConfigMap and Secret named in `envFrom`, then the container's `env`.
A volume mount becomes a local directory, and each replica gets its own loopback port (each pod has
its own IP in a cluster). Init containers run in order, each to completion; the app container starts
only if every one of them exited 0.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.core.config import PROJECT_ROOT
from tests.support.artifacts import Manifest, find

# The image's WORKDIR (/app) holds what PROJECT_ROOT holds: alembic.ini and backend/.
WORKDIR = PROJECT_ROOT
# The image puts its virtualenv first on PATH; so does this.
IMAGE_ENV = {
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def container_env(
    container: dict[str, Any],
    manifests: list[Manifest],
    secret: dict[str, str],
    volumes: dict[str, Path],
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(secret)
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    for mount in container.get("volumeMounts", []):
        local = str(volumes[mount["name"]])
        for key, value in env.items():
            if value == mount["mountPath"] or value.startswith(mount["mountPath"] + "/"):
                env[key] = local + value[len(mount["mountPath"]) :]
    return env


@dataclass
class Pod:
    """One replica of the Deployment."""

    spec: dict[str, Any]
    manifests: list[Manifest]
    secret: dict[str, str]
    volumes: dict[str, Path]
    overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    init_results: list[subprocess.CompletedProcess[str]] = field(default_factory=list)
    app: subprocess.Popen[str] | None = None

    def env(self, container: dict[str, Any]) -> dict[str, str]:
        env = container_env(container, self.manifests, self.secret, self.volumes)
        # This pod's own address: loopback and a port of its own.
        env |= {"UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(self.port)}
        env |= {"WORKER_HOST": "127.0.0.1", "WORKER_PORT": str(self.port)}
        return {**IMAGE_ENV, **env, **self.overrides}

    def run_init_containers(self, timeout: float = 180) -> bool:
        for container in self.spec.get("initContainers", []):
            result = subprocess.run(
                [*container["command"], *container.get("args", [])],
                cwd=WORKDIR,
                env=self.env(container),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            self.init_results.append(result)
            if result.returncode != 0:
                return False
        return True

    def start(self) -> None:
        if not self.run_init_containers():
            return  # Init:Error, as a kubelet reports it: the app container never starts.
        [container] = self.spec["containers"]
        self.app = subprocess.Popen(
            [*container["command"], *container.get("args", [])],
            cwd=WORKDIR,
            env=self.env(container),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def wait_ready(self, path: str, within: float = 60) -> int:
        """Poll the readiness probe's path until 200; the last status seen (0: no answer)."""
        status = 0
        deadline = asyncio.get_running_loop().time() + within
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:
            while asyncio.get_running_loop().time() < deadline:
                assert self.app is not None
                assert self.app.poll() is None, self.logs()
                try:
                    status = (await client.get(path, timeout=5)).status_code
                except httpx.TransportError:
                    status = 0
                if status == 200:
                    break
                await asyncio.sleep(0.2)
        return status

    def stop(self) -> int | None:
        """SIGTERM, as on a rollout; the app's exit code."""
        if self.app is None:
            return None
        self.app.terminate()
        try:
            self.app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.app.kill()
            self.app.wait()
        return self.app.returncode

    def logs(self) -> str:
        init = "".join(r.stdout + r.stderr for r in self.init_results)
        app = self.app.stdout.read() if self.app and self.app.stdout and self.app.poll() else ""
        return init + (app or "")
