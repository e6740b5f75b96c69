"""The deployment files (Dockerfile, docker-compose.yml, .env.example) agree with the code."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reprotrain.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "REPROTRAIN_API_TOKENS")
PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _stages() -> dict[str, list[str]]:
    """Dockerfile instructions per build stage (continuation lines joined), keyed by stage name."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = m.group(2) or m.group(1)
            stages[current] = []
        stages[current].append(line)
    return stages


def _global_args() -> dict[str, str]:
    return {m.group(1): m.group(2) for line in _stages()[""] if (m := re.match(r"ARG\s+(\w+)=(\S+)", line))}


def _resolve(image: str) -> str:
    args = _global_args()
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), image)


def test_reprotrain_variables_are_settings_fields(compose: dict[str, Any]) -> None:
    """Every REPROTRAIN_* variable named in docker-compose.yml or .env.example is a Settings field."""
    fields = {f"REPROTRAIN_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"\bREPROTRAIN_[A-Z0-9_]+", COMPOSE.read_text() + ENV_EXAMPLE.read_text()))
    assert named, "expected REPROTRAIN_* variables in the compose file"
    assert named <= fields, f"not settings fields: {sorted(named - fields)}"


def test_env_example_lists_every_compose_variable() -> None:
    """.env.example names every variable docker-compose.yml interpolates, and no other."""
    text = COMPOSE.read_text().replace("$$", "")
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used == set(_env_example())


def test_env_example_secrets_are_placeholders() -> None:
    """.env.example gives each secret an obvious placeholder, never a usable-looking value."""
    env = _env_example()
    for name in SECRETS:
        assert all(v.startswith("change-me") for v in env[name].split(",")), name


def test_secrets_are_required(compose: dict[str, Any]) -> None:
    """Every secret is interpolated only with ${VAR:?message}, never with a default."""
    text = COMPOSE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, name
        assert all(u.startswith(":?") and len(u) > 2 for u in uses), (name, uses)


def test_compose_services_and_healthchecks(compose: dict[str, Any]) -> None:
    """api, worker, redis, postgres and migrate exist; all but the one-shot migrate have healthchecks."""
    services = compose["services"]
    assert {"api", "worker", "redis", "postgres", "migrate"} <= set(services)
    for name, svc in services.items():
        if name != "migrate":
            assert svc.get("healthcheck", {}).get("test"), name
    assert services["migrate"]["command"] == ["reprotrain", "db", "upgrade"]
    assert services["cpu-worker"]["profiles"] == ["cpu"]


def test_compose_start_order(compose: dict[str, Any]) -> None:
    """api and workers wait for healthy stores and a finished migration; migrate for PostgreSQL."""
    services = compose["services"]
    for name in ("api", "worker", "cpu-worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == deps["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_reserves_one_nvidia_gpu(compose: dict[str, Any]) -> None:
    """The GPU worker reserves exactly one nvidia GPU; the CPU worker reserves none."""
    services = compose["services"]
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["count"] == 1
    assert "gpu" in device["capabilities"]
    assert "deploy" not in services["cpu-worker"]


def test_redis_is_durable_and_private(compose: dict[str, Any]) -> None:
    """Redis keeps an append-only file, never evicts, needs a password and publishes no port."""
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"]) if isinstance(redis["command"], list) else redis["command"]
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "--requirepass" in command
    assert "ports" not in redis
    assert "ports" not in compose["services"]["postgres"]


def test_urls_and_shared_volumes(compose: dict[str, Any]) -> None:
    """Services reach PostgreSQL via psycopg and Redis with its password; artifacts are shared."""
    services = compose["services"]
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["REPROTRAIN_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["REPROTRAIN_BROKER_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert services["api"]["environment"]["REPROTRAIN_HOST"] == "0.0.0.0"
    for name in ("api", "worker", "cpu-worker"):
        artifacts = services[name]["environment"]["REPROTRAIN_ARTIFACTS_DIR"]
        assert f"artifacts:{artifacts}" in services[name]["volumes"], name
    jobs = {services[n]["volumes"][1] for n in ("worker", "cpu-worker")}
    assert len(jobs) == 2, "each worker has its own job directory volume"
    assert any(v.endswith(":/data:ro") for v in services["worker"]["volumes"])


def test_compose_images_are_pinned(compose: dict[str, Any]) -> None:
    """Third-party images in the compose file are pinned by digest."""
    for name in ("redis", "postgres"):
        assert PINNED.search(compose["services"][name]["image"]), name


def test_dockerfile_targets_and_pins() -> None:
    """The Dockerfile has api and worker targets and every FROM resolves to an @sha256 pin."""
    stages = _stages()
    assert {"api", "worker"} <= set(stages)
    froms = [line.split()[1] for body in stages.values() for line in body[:1] if line.startswith("FROM")]
    assert froms
    for image in froms:
        if image in stages:  # FROM an earlier stage
            continue
        assert PINNED.search(_resolve(image)), image


def test_dockerfile_worker_environment() -> None:
    """The worker image fixes PYTHONHASHSEED and cuBLAS's workspace, pins torch, runs as non-root."""
    worker = " ".join(_stages()["worker"])
    assert re.search(r"\bPYTHONHASHSEED=0\b", worker)
    assert "CUBLAS_WORKSPACE_CONFIG=:4096:8" in worker
    lock = (ROOT / "requirements.lock").read_text()
    (torch,) = re.findall(r"^torch==(\S+)$", lock, re.MULTILINE)
    assert f"ARG TORCH_VERSION={torch}" in worker
    assert "/etc/reprotrain/build.json" in worker


@pytest.mark.parametrize("target", ["api", "worker"])
def test_dockerfile_user_and_healthcheck(target: str) -> None:
    """Each image ends as a non-root user and declares a HEALTHCHECK."""
    body = _stages()[target]
    users = [line.split()[1] for line in body if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in body)


def test_api_image_has_no_torch() -> None:
    """The API image installs no torch: its lock leaves torch (and its CUDA stack) out."""
    lock = (ROOT / "requirements-image.lock").read_text()
    names = {m.lower() for m in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.MULTILINE)}
    assert "numpy" in names
    assert not names & {"torch", "sympy", "networkx", "triton"}
    assert "--hash=sha256:" in lock
    assert "torch" not in " ".join(_stages()["api"])


def test_fingerprint_records_build_facts(tmp_path: Path) -> None:
    """The build facts the image writes are read back, typed (ImageFacts), exactly as written."""
    facts_file = tmp_path / "build.json"
    base = "nvidia/cuda:12.8.1-runtime-ubuntu24.04@sha256:" + "ab" * 32
    script = ROOT / "deploy" / "build_facts.py"
    lock = ROOT / "requirements.lock"
    args = ["--base-image", base, "--lock", str(lock), "--vcs-ref", "abc123", "-o", str(facts_file)]
    subprocess.run(
        [sys.executable, str(script), *args],
        check=True,
        capture_output=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )
    written = json.loads(facts_file.read_text())
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from reprotrain.job import fingerprint as f; "
            "print(json.dumps(f.static_facts().image.model_dump(mode='json')))",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "REPROTRAIN_BUILD_FACTS": str(facts_file)},
    )
    image = json.loads(out.stdout.strip().splitlines()[-1])
    assert image == written
    assert image["base_image_digest"] == "sha256:" + "ab" * 32
    assert image["requirements_lock_sha256"].startswith("sha256:")
    assert image["build_date"] == "2023-11-14T22:13:20Z"
    assert image["vcs_ref"] == "abc123"


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_image_locks_pin_the_versions_of_the_install_lock() -> None:
    """The images and a `make` install resolve the same versions: image locks agree with requirements.lock."""
    main = _pins(ROOT / "requirements.lock")
    for lock in ("requirements-image.lock", "requirements-worker.lock"):
        pins = _pins(ROOT / lock)
        assert pins, lock
        shared = {name: v for name, v in pins.items() if name in main}
        assert shared == {name: main[name] for name in shared}, lock
        assert "torch" not in pins  # installed by its own pinned line from the CUDA index


def test_the_wheel_stage_copies_every_mapped_folder() -> None:
    """Each folder pyproject maps into the package (service/, worker/, examples/) is in the wheel build."""
    import tomllib

    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copied = {line.split()[1].rstrip("/") for line in _stages()["wheel"] if line.startswith("COPY ")}
    allowed = {line.strip("!/\n") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for folder in mapped.values():
        assert folder in copied, f"Dockerfile's wheel stage does not COPY {folder}/"
        assert folder in allowed, f".dockerignore keeps {folder}/ out of the build context"


def test_workers_can_confine_jobs_and_refuse_to_run_them_unconfined(compose: dict[str, Any]) -> None:
    """Each worker service gets what namespace confinement needs (root in its container, SYS_ADMIN,
    NET_ADMIN, no AppArmor mount ban) and REPROTRAIN_ISOLATION=namespaces; the API gets none of it."""
    from reprotrain.settings import Settings

    services = compose["services"]
    for name in ("worker", "cpu-worker"):
        svc = services[name]
        assert svc["user"] == "0:0", name
        assert set(svc["cap_add"]) == {"SYS_ADMIN", "NET_ADMIN"}, name
        assert "apparmor=unconfined" in svc["security_opt"], name
        assert svc["environment"]["REPROTRAIN_ISOLATION"] == "namespaces", name
        Settings(isolation=svc["environment"]["REPROTRAIN_ISOLATION"])  # a value the worker accepts
    for name in ("api", "migrate"):
        assert "cap_add" not in services[name] and "user" not in services[name], name
