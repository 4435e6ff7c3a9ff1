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

ROOT = Path(__file__).resolve().parent.parent
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
