"""docker-compose.yml stays in step with the code and the README (no Docker engine needed)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from core.infra.settings import Settings
from core.infra.temporal import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_SERVICES = {"postgres", "temporal", "temporal-ui", "mailpit", "api", "worker"}
PENNANT_SERVICES = {"api": ["pennant", "api"], "worker": ["pennant", "worker"]}


def _services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services: dict[str, Any] = compose["services"]
    return services


def _env_names(service: dict[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return set(env)
    # list form: "NAME=value" or bare "NAME"
    return {item.split("=", 1)[0] for item in env}


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def test_pennant_services_set_only_real_settings() -> None:
    services = _services()
    known = {name.upper() for name in Settings.model_fields}
    for name in PENNANT_SERVICES:
        env = _env_names(services[name])
        assert env, f"service {name!r} sets no environment"
        unknown = sorted(env - known)
        assert not unknown, f"service {name!r} sets {unknown}, which are not fields of core.infra.settings.Settings"


def test_required_services_exist() -> None:
    missing = REQUIRED_SERVICES - set(_services())
    assert not missing, f"docker-compose.yml lacks services {sorted(missing)}"


def test_pennant_services_run_the_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    services = _services()
    for name, expected in PENNANT_SERVICES.items():
        argv = _argv(services[name]["command"])
        assert argv == expected, f"service {name!r} runs {argv}, expected {expected}"
        assert argv[0] in scripts, f"{argv[0]!r} is not a [project.scripts] entry of pyproject.toml"


def test_temporal_setup_registers_the_search_attributes() -> None:
    setup = _services()["temporal-setup"]
    script = " ".join(_argv(setup["command"]))
    assert "search-attribute create" in script
    assert "--type Keyword" in script
    for key in SEARCH_ATTRIBUTES:
        assert key.name in script, f"temporal-setup does not register search attribute {key.name}"


def _compose_sections(readme: str) -> list[list[str]]:
    """The lines under each heading that mentions compose, code blocks left out."""
    sections: list[list[str]] = []
    current: list[str] | None = None
    level = 0
    in_code = False
    for line in readme.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if heading:
            depth = len(heading.group(1))
            if current is not None and depth <= level:
                current = None
            if current is None and "compose" in heading.group(2).lower():
                current, level = [], depth
                sections.append(current)
            continue
        if current is not None:
            current.append(line)
    return sections


def test_readme_compose_section_names_real_services() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sections = _compose_sections(readme)
    if not sections:
        assert "docker-compose.yml" in readme, "README.md has no compose section and never mentions docker-compose.yml"
        return
    services = set(_services())
    checked: set[str] = set()
    for lines in sections:
        # Paragraphs that talk about compose or its services; backticked lower-case names in
        # them are service names (file names, commands and settings do not look like that).
        paragraphs = " ".join(line.strip() or "\n" for line in lines).split("\n")
        for paragraph in paragraphs:
            if not re.search(r"compose|service", paragraph, re.IGNORECASE):
                continue
            names = set(re.findall(r"`([a-z][a-z0-9_-]*)`", paragraph)) - {"docker", "compose", "docker-compose"}
            missing = sorted(names - services)
            assert not missing, f"README names compose services {missing} that docker-compose.yml lacks: {paragraph!r}"
            checked |= names
    assert checked, "README.md's compose section names no services in backticks, so nothing could be checked"


# -- production defaults: secrets from .env, two published ports, Grafana locked, metrics token ---

SECRETS = (
    "ADMIN_KEY",
    "LINK_SIGNING_SECRET",
    "PROVIDER_EVENTS_SECRET",
    "CONSOLE_SESSION_SECRET",
    "METRICS_TOKEN",
    "SECRETS_KEYRING",
)
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([?-])([^}]*))?\}")


def _compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text(encoding="utf-8")


def _variables(kind: str) -> set[str]:
    """The variables compose interpolates with `${NAME:<kind>…}` in any value (comments aside)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            found.update(m.group(1) for m in _VARIABLE.finditer(node) if m.group(2) == kind)

    walk(yaml.safe_load(_compose_text()))
    return found


def _required(value: str, name: str) -> bool:
    """Whether `value` is `${name:?message}`: compose stops when the variable is unset or empty."""
    return re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", value) is not None


def test_compose_takes_every_secret_from_env_and_refuses_without_it() -> None:
    services = _services()
    for service in PENNANT_SERVICES:
        env = services[service]["environment"]
        for name in SECRETS:
            assert _required(str(env.get(name, "")), name), (
                f"{service}: {name} is {env.get(name)!r}, not ${{{name}:?…}}"
            )
    text = _compose_text()
    assert "change-me" not in text, "compose must not ship placeholder secrets"
    defaulted = _variables("-")
    assert not defaulted & {*SECRETS, "GRAFANA_ADMIN_PASSWORD"}, f"secrets with a default: {defaulted}"


def test_env_example_lists_every_required_variable_and_no_value() -> None:
    required = _variables("?")
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    given = dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    missing = sorted(required - set(given))
    assert not missing, f"compose requires {missing}, which .env.example does not list"
    assert all(value == "" for value in given.values()), "the example ships no secret: every value is blank"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "cp .env.example .env" in readme, "the README tells the operator to create .env"


def test_only_the_api_and_grafana_are_published() -> None:
    published = {name: service["ports"] for name, service in _services().items() if service.get("ports")}
    assert published == {"api": ["8000:8000"], "grafana": ["3000:3000"]}, published


def test_grafana_has_no_anonymous_access_and_no_default_password() -> None:
    env = _services()["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert _required(env["GF_SECURITY_ADMIN_PASSWORD"], "GRAFANA_ADMIN_PASSWORD")


def test_prometheus_sends_the_metrics_token_the_services_require() -> None:
    compose = yaml.safe_load(_compose_text())
    assert compose["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}
    assert "metrics_token" in compose["services"]["prometheus"]["secrets"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    for name in ("pennant-api", "pennant-worker"):
        assert jobs[name]["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}, name


def _substituted(value: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if name in env:
            return env[name]
        assert kind != "?", f"{name} is required and not set"
        return rest if kind == "-" else ""

    return _VARIABLE.sub(one, value)


def test_compose_with_a_generated_env_passes_the_production_check() -> None:
    """What the API and workers would see under compose with .env filled as .env.example says."""
    import secrets

    required = _variables("?")
    dotenv = {name: secrets.token_urlsafe(32) for name in required}
    for service in PENNANT_SERVICES:
        raw = _services()[service]["environment"]
        values = {name.lower(): _substituted(str(value), dotenv) for name, value in raw.items()}
        settings = Settings(**values)
        assert settings.pennant_env == "production"
        assert settings.production_problems() == [], (service, settings.production_problems())
