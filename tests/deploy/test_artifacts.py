"""The Dockerfile, compose file and Kubernetes manifests, checked offline by their validators."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.core.config import PROJECT_ROOT, SettingsError, settings_classes
from backend.main import MODULES, module_routers
from tests.support.artifacts import (
    K8S,
    Manifest,
    actionlint,
    find,
    kinds,
    load_yaml,
    present_sections,
    render,
    render_text,
    tool,
    with_component,
)

pytestmark = [pytest.mark.deploy]

module_routers()  # imports every module, with its settings class
CLASSES = [kind for kind in settings_classes() if kind.__module__.startswith("backend.")]
SETTINGS = {name.upper() for kind in CLASSES for name in kind.model_fields}
# Settings a cluster leaves at their default, and why.
CLUSTER_DEFAULTS = {
    "EMBEDDED_DB_DIR": "a cluster names its database in DATABASE_URL",
    "API_DOCS": "follows ENVIRONMENT (off in prod, on in the dev overlay)",
}
# Variables no settings class reads: obstore takes object storage keys from the environment.
CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_dockerfile_passes_hadolint() -> None:
    result = tool("hadolint", "--no-color", "Dockerfile")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (PROJECT_ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments))
    return stages


def ignored_by_docker(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_image_holds_the_app_and_its_migrations_and_runs_as_non_root() -> None:
    stages = dockerfile_stages()
    copied = [
        source
        for stage in stages
        for instruction, arguments in stage
        if instruction == "COPY" and "--from" not in arguments
        for source in arguments.split()[:-1]
    ]
    # Everything the build copies is in the context; migrations and their config are among it.
    for source in copied:
        assert (PROJECT_ROOT / source).exists(), source
        assert not ignored_by_docker(source), source
    assert {"alembic.ini", "backend", "uv.lock"} <= set(copied)
    assert (PROJECT_ROOT / "backend" / "alembic" / "env.py").exists()
    # Local state, secrets and tests stay out of the build context.
    for private in (".data", ".venv", ".env", "tests", ".git"):
        assert ignored_by_docker(private), private

    build, runtime = stages[-2], stages[-1]
    assert any("uv sync --locked --no-dev --no-install-project" in a for _, a in build)
    runtime_text = " ".join(f"{i} {a}" for i, a in runtime)
    assert "uv" not in re.findall(r"\b\w+\b", runtime_text.replace("uvicorn", ""))
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime_text
    assert "PYTHONUNBUFFERED=1" in runtime_text
    user = [a for i, a in runtime if i == "USER"][-1]
    assert user.split(":")[0] not in {"0", "root"}
    command = [a for i, a in runtime if i == "CMD"][-1]
    assert command.startswith('["uvicorn", "backend.main:app"')


WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))


def test_github_workflow_passes_actionlint() -> None:
    assert [path.name for path in WORKFLOWS] == ["ci.yml"]
    assert actionlint(*WORKFLOWS) == []


def test_actionlint_finds_what_is_wrong(tmp_path: Path) -> None:
    """The linter above is live: a typo in an expression and a job with no runner are caught."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    steps:\n      - run: echo ${{ github.evnt }}\n")
    messages = " / ".join(finding["message"] for finding in actionlint(broken))
    assert '"evnt" is not defined' in messages
    assert '"runs-on" section is missing' in messages


def test_github_workflow_tests_then_builds_migrates_and_serves_the_image() -> None:
    [workflow] = WORKFLOWS
    jobs = load_yaml(workflow)["jobs"]
    runs = {name: [step.get("run", "") for step in job["steps"]] for name, job in jobs.items()}
    assert "python3 dev.py test" in runs["test"]
    assert (PROJECT_ROOT / ".ci" / "run").read_text().rstrip().endswith("python3 dev.py test")
    image = "\n".join(runs["image"])
    for command in ("docker build", "alembic upgrade head", "--read-only", "/readyz", "/metrics"):
        assert command in image, command
    assert jobs["image"]["services"]["db"]["image"] == "pgvector/pgvector:pg18"


def test_yaml_files_pass_yamllint() -> None:
    result = tool("yamllint", "--strict", "--format", "parsable", ".")
    assert (result.returncode, result.stdout) == (0, "")


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest in k8s/ (kustomization files are kustomize's, not the API's)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def validate(*paths: Path) -> None:
    result = tool("kubernetes-validate", "--strict", "--quiet", *map(str, paths))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_passes_strict_kubernetes_validation() -> None:
    files = manifest_files()
    assert {p.name for p in files} >= {"deployment.yaml", "secret.template.yaml", "job.yaml"}
    validate(*files)


RENDERINGS = {
    "dev": lambda tmp: K8S / "overlays" / "dev",
    "prod": lambda tmp: K8S / "overlays" / "prod",
    "prod+migrate-job": lambda tmp: with_component(tmp, "prod", "migrate-job"),
}


@pytest.mark.parametrize("name", RENDERINGS)
def test_rendered_overlay_passes_strict_kubernetes_validation(name: str, tmp_path: Path) -> None:
    rendered = render_text(RENDERINGS[name](tmp_path))
    out = tmp_path / f"{name}.yaml"
    out.write_text(rendered)
    validate(out)
    # The Secret is never rendered: it comes from the cluster's secret store.
    assert "kind: Secret" not in rendered


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = find(manifests, "Deployment", "backend")["spec"]["template"]["spec"]
    return spec


def test_prod_overlay_migrates_in_an_init_container_then_serves() -> None:
    prod = render(K8S / "overlays" / "prod")
    assert {m["metadata"].get("namespace", "backend") for m in prod} == {"backend"}
    deployment = find(prod, "Deployment", "backend")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    spec = pod_spec(prod)
    [init] = spec["initContainers"]
    [api] = spec["containers"]
    assert init["command"] == ["alembic", "upgrade", "head"]
    assert api["command"][:2] == ["uvicorn", "backend.main:app"]
    # Same image and the same settings: the migration sees the database the API will use.
    assert init["image"] == api["image"] == "registry.example.com/backend:0.1.0"
    assert init["envFrom"] == api["envFrom"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    for container in (init, api):
        assert {"requests", "limits"} <= set(container["resources"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True

    # Files go to the object store: no claim, nothing shared between replicas but the bucket.
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in api["volumeMounts"]}
    assert list(mounts) == ["/tmp"]
    assert "emptyDir" in mounts["/tmp"]
    assert "PersistentVolumeClaim" not in kinds(prod)
    if "file" in MODULES:
        config = find(prod, "ConfigMap", "backend-config")["data"]
        assert config["STORAGE_BACKEND"] == "s3"
        assert config["S3_BUCKET"]
    assert spec["serviceAccountName"] == find(prod, "ServiceAccount")["metadata"]["name"]

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        find(prod, "Service", "backend")["spec"]["selector"],
        find(prod, "PodDisruptionBudget", "backend")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    hpa = find(prod, "HorizontalPodAutoscaler", "backend")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "backend",
    }
    assert hpa["minReplicas"] >= deployment["spec"]["replicas"]


def test_dev_overlay_is_one_replica_in_its_own_namespace() -> None:
    dev = render(K8S / "overlays" / "dev")
    assert {m["metadata"].get("namespace", "backend-dev") for m in dev} == {"backend-dev"}
    assert find(dev, "Namespace")["metadata"]["name"] == "backend-dev"
    assert find(dev, "Deployment", "backend")["spec"]["replicas"] == 1
    config = find(dev, "ConfigMap", "backend-config")["data"]
    assert config["ENVIRONMENT"] == "development"
    assert "HorizontalPodAutoscaler" not in kinds(dev)
    # Its one replica keeps files on a disk of its own (the default storage class's RWO), and a
    # rollout stops the old pod before the new one mounts that disk.
    if "file" not in MODULES:
        return
    assert config["STORAGE_BACKEND"] == "local"
    spec = pod_spec(dev)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0]["volumeMounts"]}
    claim = mounts[config["FILE_STORAGE_DIR"]]["persistentVolumeClaim"]["claimName"]
    assert find(dev, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert find(dev, "Deployment", "backend")["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("name", RENDERINGS)
def test_no_rendering_asks_for_a_shared_disk(name: str, tmp_path: Path) -> None:
    """A ReadWriteMany claim stays Pending on the big clouds' default (block) storage class."""
    assert "ReadWriteMany" not in render_text(RENDERINGS[name](tmp_path))


def test_migrate_job_component_replaces_the_init_container(tmp_path: Path) -> None:
    manifests = render(with_component(tmp_path, "prod", "migrate-job"))
    spec = pod_spec(manifests)
    assert "initContainers" not in spec
    [job] = find(manifests, "Job", "backend-migrate")["spec"]["template"]["spec"]["containers"]
    assert job["command"] == ["alembic", "upgrade", "head"]
    assert job["image"] == spec["containers"][0]["image"]
    assert job["envFrom"] == spec["containers"][0]["envFrom"]


def secret_template() -> tuple[dict[str, str], set[str]]:
    """The Secret template's keys with their values, and the keys it names in comments."""
    text = present_sections((K8S / "base" / "secret.template.yaml").read_text())
    commented = set(re.findall(r"^\s*#\s*([A-Z][A-Z0-9_]*):", text, re.M))
    return yaml.safe_load(text)["stringData"], commented


def test_configmap_and_secret_template_hold_every_setting_and_nothing_else() -> None:
    configmap = yaml.safe_load(present_sections((K8S / "base" / "configmap.yaml").read_text()))
    configmap = configmap["data"]
    # Every value is a string, as Kubernetes requires of ConfigMap data.
    assert all(isinstance(v, str) for v in configmap.values())
    secret, commented = secret_template()
    assert {"DATABASE_URL", "JWT_SECRET"} <= set(secret)
    assert set(secret.values()) == {""}, "the template must hold no real values"
    named = set(configmap) | set(secret) | commented
    assert named - SETTINGS - CREDENTIALS == set(), "not a setting of any settings class"
    assert SETTINGS - named - set(CLUSTER_DEFAULTS) == set(), "missing from the ConfigMap"


def test_configmap_values_are_accepted_by_every_settings_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in load_yaml(K8S / "base" / "configmap.yaml")["data"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db:5432/app")
    monkeypatch.setenv("JWT_SECRET", "s" * 40)
    for kind in CLASSES:
        try:
            kind.load()
        except SettingsError as exc:
            pytest.fail(f"{kind.__name__}: {exc}")


def documented_settings(path: Path) -> set[str]:
    """The variables in the first column of the configuration table of a markdown file."""
    text = path.read_text()
    if "| variable | default | meaning |" not in text:
        return set()
    table = text.split("| variable | default | meaning |", 1)[1].split("\n\n", 1)[0]
    first_column = [row.split("|")[1] for row in table.strip().splitlines()[1:]]
    return set(re.findall(r"`([A-Z][A-Z0-9_]*)`", "".join(first_column)))


def test_the_docs_and_each_module_readme_list_every_setting() -> None:
    """The core's in docs/configuration.md, each module's in its README (gone with it)."""
    core = documented_settings(PROJECT_ROOT / "docs" / "configuration.md")
    modules = [
        documented_settings(PROJECT_ROOT / "backend" / "modules" / name / "README.md")
        for name in MODULES
    ]
    named = core.union(*modules) - {"PORT"}
    assert named == SETTINGS


def test_compose_runs_db_then_migrate_then_api_and_worker() -> None:
    compose = load_yaml(PROJECT_ROOT / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"db", "migrate", "api", "worker"}

    db = services["db"]
    assert db["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in db["healthcheck"]["test"]
    volume = db["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]

    migrate, api, worker = services["migrate"], services["api"], services["worker"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "--reload" in api["command"]
    assert "./backend:/app/backend:ro" in api["volumes"]
    # The worker ingests documents, so the API does not; it reads the API's uploads.
    assert api["environment"]["BACKGROUND_IN_PROCESS"] == "false"
    assert worker["command"] == ["python", "-m", "backend.worker"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert set(api["volumes"]) & set(worker["volumes"]) >= {"files:/data/files"}
    for service in (migrate, api, worker):
        assert service["build"] == "."
        assert service["image"] == api["image"]
        assert service["env_file"] == [{"path": ".env", "required": False}]
        assert service["environment"]["DATABASE_URL"].endswith("@db:5432/app")


def test_env_example_names_every_setting() -> None:
    text = present_sections((PROJECT_ROOT / ".env.example").read_text())
    names = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M)
    assert set(names) == SETTINGS
