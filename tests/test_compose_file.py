"""Static checks of docker-compose.yml, the Dockerfile and the postgres init script (no Docker).

The compose file is configuration that nothing else exercises on this machine, so these tests
hold it to the code: every variable it sets must be one the settings read, every port and host it
names must be one a service actually serves, every file it mounts or builds must exist.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_SQL = ROOT / "deploy" / "postgres-init.sql"

REQUIRED_SERVICES = {"postgresql", "temporal", "temporal-ui", "worker", "api", "sandbox"}
# The engine's own processes: they read core.settings.Settings from their environment.
ENGINE_SERVICES = ("worker", "api", "sandbox")
CONNECTORS = ("recommender", "detection", "moderation", "notify")
SECRETS = ("CRISIS_PLATFORM_TOKEN", "CRISIS_WEBHOOK_SECRET")
# `${NAME:?message}`: compose refuses to start while NAME is unset or empty.
REQUIRED_VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")
INTERPOLATION = re.compile(r"\$\{[^}]*\}")


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), "docker-compose.yml is not a mapping"
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "docker-compose.yml has no services"
    return found


def settings_env_names() -> set[str]:
    """Every environment variable name core.settings.Settings reads."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        elif alias is None:
            names.add(field.alias or name.upper())
    return names


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whether written as a mapping or a list of K=V."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in raw)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def command(service: dict[str, Any]) -> list[str]:
    raw = service.get("command") or []
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def flag(argv: list[str], name: str) -> str:
    """The value of `--name V` or `--name=V` in argv."""
    for index, part in enumerate(argv):
        if part == name and index + 1 < len(argv):
            return argv[index + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    raise AssertionError(f"{name} not found in command {argv}")


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port for every port a service publishes (short or long syntax)."""
    mapping: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            target, published = entry["target"], entry.get("published", entry["target"])
        else:
            parts = str(entry).split("/")[0].split(":")
            target = parts[-1]
            published = parts[-2] if len(parts) >= 2 else parts[-1]
        mapping[int(target)] = int(published)
    return mapping


def listening_port(service: dict[str, Any]) -> int:
    """The container port an engine HTTP service listens on, from its `--port` flag."""
    return int(flag(command(service), "--port"))


def depends_on(service: dict[str, Any]) -> list[str]:
    raw = service.get("depends_on") or []
    return list(raw) if isinstance(raw, (list, dict)) else [raw]


def without_interpolation(value: str) -> str:
    """`value` with every `${...}` replaced by a plain token, so that it parses as a URL."""
    return INTERPOLATION.sub("interpolated", value)


def bind_sources(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every bind mount (a volume whose source is a path, not a name)."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts.append((entry["source"], entry["target"]))
            continue
        source, _, rest = str(entry).partition(":")
        if source.startswith((".", "/", "~")):
            mounts.append((source, rest.split(":")[0]))
    return mounts


# --- the file and its services -----------------------------------------------------------------


def test_compose_file_parses_and_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    """The compose file is valid YAML and defines the whole production stack."""
    missing = REQUIRED_SERVICES - services.keys()
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    """Compose can only start a service it can pull or build."""
    bare = [
        name
        for name, service in services.items()
        if "image" not in service and "build" not in service
    ]
    assert not bare, f"services with neither image nor build: {bare}"


def test_engine_services_run_the_project_image(services: dict[str, dict[str, Any]]) -> None:
    """Worker, API and sandbox are built from this repository and run the matching subcommand."""
    for name in ENGINE_SERVICES:
        assert "build" in services[name], f"{name} is not built from the repository"
        argv = command(services[name])
        assert argv[:2] == ["crisis", name], f"{name} runs {argv}, expected `crisis {name} ...`"


def test_worker_is_replicated(services: dict[str, dict[str, Any]]) -> None:
    """At least two workers run, and nothing pins a replica to a single name or host port."""
    worker = services["worker"]
    replicas = (worker.get("deploy") or {}).get("replicas", 1)
    assert int(replicas) >= 2, f"worker runs {replicas} replica(s); at least 2 expected"
    assert "container_name" not in worker, "a container_name makes a second replica impossible"
    assert not worker.get("ports"), "replicas cannot all publish the same host port"


def test_depends_on_names_existing_services(services: dict[str, dict[str, Any]]) -> None:
    """Every depends_on entry names a service defined in the file."""
    dangling = {
        name: missing
        for name, service in services.items()
        if (missing := [dep for dep in depends_on(service) if dep not in services])
    }
    assert not dangling, f"depends_on names unknown services: {dangling}"


# --- environment against core.settings -----------------------------------------------------------


def test_engine_environment_names_are_settings_aliases(
    services: dict[str, dict[str, Any]],
) -> None:
    """Every CRISIS_/TEMPORAL_ variable set on an engine service is read by Settings."""
    known = settings_env_names()
    unknown = {
        name: sorted(
            variable
            for variable in environment(services[name])
            if variable.startswith(("CRISIS_", "TEMPORAL_")) and variable not in known
        )
        for name in ENGINE_SERVICES
    }
    unknown = {name: variables for name, variables in unknown.items() if variables}
    assert not unknown, (
        f"variables no Settings field reads (renamed or misspelt?): {unknown}; "
        f"Settings reads {sorted(known)}"
    )


def test_dockerfile_environment_names_are_settings_aliases() -> None:
    """Every CRISIS_/TEMPORAL_ variable the Dockerfile sets with ENV is read by Settings."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    names = {
        match
        for line in text.splitlines()
        if line.strip().startswith("ENV ")
        for match in re.findall(r"\b((?:CRISIS|TEMPORAL)_[A-Z0-9_]+)=", line)
    }
    assert names, "the Dockerfile sets no CRISIS_ variable (playbooks and data dirs expected)"
    unknown = names - settings_env_names()
    assert not unknown, f"Dockerfile ENV names no Settings field reads: {sorted(unknown)}"


def test_api_and_worker_share_the_engine_environment(services: dict[str, dict[str, Any]]) -> None:
    """API and worker reach the same Temporal, task queue, audit database and platform."""
    worker, api = environment(services["worker"]), environment(services["api"])
    for variable, value in worker.items():
        assert api.get(variable) == value, (
            f"api sets {variable}={api.get(variable)!r}, worker {value!r}"
        )


def test_api_does_not_embed_a_worker(services: dict[str, dict[str, Any]]) -> None:
    """The API runs without an embedded worker, since workers scale as their own service."""
    value = environment(services["api"]).get("CRISIS_API_EMBEDDED_WORKER", "")
    assert value.lower() in {"false", "0", "no", "off"}, (
        f"CRISIS_API_EMBEDDED_WORKER on api is {value!r}, expected false"
    )


# --- ports and addresses -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["api", "sandbox"])
def test_published_port_matches_command_port(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    """The container port an HTTP service publishes is the one its `--port` makes it listen on."""
    service = services[name]
    port = listening_port(service)
    published = published_ports(service)
    assert port in published, (
        f"{name} listens on {port} but publishes container ports {sorted(published)}"
    )
    assert flag(command(service), "--host") == "0.0.0.0", (
        f"{name} must listen on 0.0.0.0 to be reachable from other containers"
    )


def test_worker_temporal_address_points_at_temporal(services: dict[str, dict[str, Any]]) -> None:
    """TEMPORAL_ADDRESS on the worker is the temporal service on its frontend port 7233."""
    address = environment(services["worker"]).get("TEMPORAL_ADDRESS", "")
    host, _, port = address.rpartition(":")
    assert host == "temporal", f"TEMPORAL_ADDRESS host is {host!r}, expected the temporal service"
    assert port == "7233", f"TEMPORAL_ADDRESS port is {port!r}, expected 7233"
    assert 7233 in published_ports(services["temporal"]), "temporal does not publish port 7233"


def test_connector_urls_point_at_existing_services(services: dict[str, dict[str, Any]]) -> None:
    """Every platform connector is configured with a URL served by a service of this file."""
    env = environment(services["worker"])
    for connector in CONNECTORS:
        assert f"{connector}_url" in Settings.model_fields, f"Settings lost {connector}_url"
        variable = f"CRISIS_{connector.upper()}_URL"
        assert variable in env, f"{variable} is unset: the worker would call its own localhost"
        url = urlsplit(env[variable])
        assert url.scheme == "http", f"{variable}={env[variable]!r} is not an http URL"
        assert url.hostname in services, f"{variable} points at unknown host {url.hostname!r}"
        target = services[url.hostname]
        assert url.port == listening_port(target), (
            f"{variable} uses port {url.port}, {url.hostname} listens on {listening_port(target)}"
        )
        assert url.path.rstrip("/") == f"/{connector}", (
            f"{variable} path is {url.path!r}; the sandbox serves {connector} under /{connector}"
        )


def test_every_connector_field_is_configured(services: dict[str, dict[str, Any]]) -> None:
    """A connector added to Settings is also pointed somewhere by the compose file."""
    env = environment(services["worker"])
    connector_fields = {
        name.removesuffix("_url")
        for name in Settings.model_fields
        if name.endswith("_url") and name != "database_url"
    }
    unconfigured = sorted(c for c in connector_fields if f"CRISIS_{c.upper()}_URL" not in env)
    assert not unconfigured, f"connectors without a URL in docker-compose.yml: {unconfigured}"


# --- databases -----------------------------------------------------------------------------------


def test_audit_database_is_the_postgresql_service(services: dict[str, dict[str, Any]]) -> None:
    """CRISIS_DATABASE_URL names a user and database the init script creates, on postgresql."""
    raw = environment(services["worker"]).get("CRISIS_DATABASE_URL", "")
    url = urlsplit(without_interpolation(raw))
    assert url.scheme == "postgresql", f"CRISIS_DATABASE_URL scheme is {url.scheme!r}"
    assert url.hostname == "postgresql" and url.port == 5432, (
        f"CRISIS_DATABASE_URL points at {url.hostname}:{url.port}, not postgresql:5432"
    )
    sql = INIT_SQL.read_text(encoding="utf-8")
    assert f"CREATE ROLE {url.username} " in sql, f"init script does not create {url.username}"
    database = url.path.lstrip("/")
    assert f"CREATE DATABASE {database} " in sql, f"init script does not create {database}"


def test_temporal_uses_the_postgresql_service(services: dict[str, dict[str, Any]]) -> None:
    """Temporal persists to the postgresql service as a user the init script creates."""
    temporal = services["temporal"]
    env = environment(temporal)
    assert env.get("DB") == "postgres12"
    assert env.get("DB_PORT") == "5432"
    assert env.get("POSTGRES_SEEDS") == "postgresql"
    assert env.get("POSTGRES_PWD"), "temporal has no database password"
    user = env.get("POSTGRES_USER", "")
    assert f"CREATE ROLE {user} " in INIT_SQL.read_text(encoding="utf-8"), (
        f"init script does not create temporal's user {user!r}"
    )
    condition = (temporal.get("depends_on") or {}).get("postgresql", {}).get("condition")
    assert condition == "service_healthy", "temporal must wait for postgresql to be healthy"
    test = " ".join(services["postgresql"].get("healthcheck", {}).get("test", []))
    assert "pg_isready" in test, "postgresql healthcheck does not use pg_isready"


def test_init_script_environment_is_provided(services: dict[str, dict[str, Any]]) -> None:
    """Every variable the init script reads with \\getenv is set on the postgresql service."""
    read = set(
        re.findall(
            r"^\\getenv\s+\w+\s+(\w+)", INIT_SQL.read_text(encoding="utf-8"), flags=re.MULTILINE
        )
    )
    assert read, "the init script reads no passwords from the environment"
    missing = read - environment(services["postgresql"]).keys()
    assert not missing, f"postgresql does not set {sorted(missing)} for the init script"


def test_secrets_are_required_variables(services: dict[str, dict[str, Any]]) -> None:
    """No secret is written into the compose file; each is a `${NAME:?}` the operator must set."""
    for name in ENGINE_SERVICES:
        env = environment(services[name])
        for secret in SECRETS:
            if secret in env:
                assert REQUIRED_VARIABLE.match(env[secret]), (
                    f"{secret} on {name} is {env[secret]!r}, not a required ${{VAR:?}} variable"
                )
    for secret in SECRETS:
        assert secret in environment(services["worker"]), f"worker does not set {secret}"
    database_url = environment(services["worker"])["CRISIS_DATABASE_URL"]
    userinfo = re.match(r"^[a-z+]+://[^:@/]+:(.*)@[^@]+$", database_url)
    assert userinfo and REQUIRED_VARIABLE.match(userinfo.group(1)), (
        f"the audit database password in {database_url!r} is not a required ${{VAR:?}} variable"
    )
    postgres_password = environment(services["postgresql"]).get("POSTGRES_PASSWORD", "")
    assert REQUIRED_VARIABLE.match(postgres_password), "POSTGRES_PASSWORD is written in the file"


def test_sandbox_verifies_with_the_engine_webhook_secret(
    services: dict[str, dict[str, Any]],
) -> None:
    """The sandbox checks webhook signatures with the secret the engine signs them with."""
    engine_secret = environment(services["worker"]).get("CRISIS_WEBHOOK_SECRET")
    sandbox_secret = environment(services["sandbox"]).get("CRISIS_WEBHOOK_SECRET")
    assert sandbox_secret == engine_secret, "sandbox and engine disagree on the webhook secret"


# --- files the compose file and the Dockerfile refer to ------------------------------------------


def test_referenced_files_exist(services: dict[str, dict[str, Any]]) -> None:
    """Build contexts hold their Dockerfile and every bind-mounted file exists in the repo."""
    for name, service in services.items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (ROOT / context / dockerfile).is_file(), f"{name}: no {context}/{dockerfile}"
        for source, _target in bind_sources(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
    init_mounts = [
        source
        for source, target in bind_sources(services["postgresql"])
        if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert any((ROOT / source).resolve() == INIT_SQL for source in init_mounts), (
        "deploy/postgres-init.sql is not mounted into /docker-entrypoint-initdb.d/"
    )


def test_dockerfile_copies_every_package() -> None:
    """The image contains every package pyproject installs, plus the playbooks."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["packages"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = {
        source.rstrip("/")
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    if "." not in copied:
        top_level = {
            package.split(".")[0] for package in packages
        }  # a COPY of a dir has its subpackages
        missing = sorted((top_level | {"playbooks", "pyproject.toml"}) - copied)
        assert not missing, f"the Dockerfile does not COPY {missing}"
    assert re.search(r"^CMD \[\"crisis\", \"worker\"\]", dockerfile, re.MULTILINE)
    assert re.search(r"^USER (?!root\b)\S+", dockerfile, re.MULTILINE), "image runs as root"
