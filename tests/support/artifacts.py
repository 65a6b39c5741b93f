"""Read the deployment artifacts the way their own tools do: kubectl, kustomize, YAML."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from backend.core.config import PROJECT_ROOT

BIN = Path(sys.executable).parent
K8S = PROJECT_ROOT / "k8s"
Manifest = dict[str, Any]


def tool(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command-line tool from this project's virtualenv (hadolint, kubectl, yamllint...)."""
    return subprocess.run(
        [str(BIN / name), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def render_text(kustomization: Path) -> str:
    """`kubectl kustomize` of one overlay: the YAML it would apply."""
    result = tool("kubectl", "kustomize", str(kustomization))
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(kustomization: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(render_text(kustomization)) if doc]


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(manifests: list[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def with_component(tmp: Path, overlay: str, component: str) -> Path:
    """A copy of k8s/ whose `overlay` enables `component`, as the component's comment says to."""
    copy = tmp / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays" / overlay / "kustomization.yaml"
    with kustomization.open("a") as out:
        out.write(f"components:\n  - ../../components/{component}\n")
    return kustomization.parent
