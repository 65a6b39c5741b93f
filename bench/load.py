"""wrk, the load generator: installed from Debian's packages when missing, driven by Lua."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, '
    .. '"socket_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
"""


@dataclass(frozen=True)
class Endpoint:
    """One request, for wrk (`lua`) or the bench's own client (`http`)."""

    name: str
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None

    def http(self, host: str) -> bytes:
        """The request as HTTP/1.1 bytes on a keep-alive connection."""
        body = (self.body or "").encode()
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def lua(self) -> str:
        lines = [f'wrk.method = "{self.method}"']
        lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in self.headers.items()]
        if self.body is not None:
            lines.append(f"wrk.body = [[{self.body}]]")
        return "\n".join(lines) + REPORT


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("wrk not found: installing Debian's package", flush=True)
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(install, capture_output=True)
    if not shutil.which("wrk"):
        raise SystemExit(
            "wrk is needed for the API benchmark and could not be installed with apt-get "
            "(run as root, or `sudo apt-get install wrk`)"
        )


def wrk(
    base_url: str,
    endpoint: Endpoint,
    seconds: int,
    connections: int,
    workdir: Path,
    prefix: list[str],
) -> WrkResult:
    """One wrk run: one thread, `connections` keep-alive connections, `seconds` long."""
    script = workdir / f"{abs(hash(endpoint.name))}.lua"
    script.write_text(endpoint.lua())
    command = [
        *prefix,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        base_url + endpoint.path,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    summary = json.loads([line for line in output.splitlines() if line.startswith("{")][-1])
    if summary["non2xx"] or summary["socket_errors"] or not summary["requests"]:
        raise SystemExit(f"{endpoint.name} at {base_url}: bad responses under load: {summary}")
    return WrkResult(
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
    )
