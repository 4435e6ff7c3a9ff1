"""Where in a YAML text a config error's path is: the line a `path: reason` points at, so the
editor shows each error at its line."""

from __future__ import annotations

import re

import yaml

_SYNTAX_AT = re.compile(r"at line (\d+), column \d+")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(index) if index else key for key, index in _PART.findall(path)]


def line_of(text: str, error: str) -> int | None:
    """The 1-based line of `error` (`a.b[0].c: reason`, or a YAML syntax error with its line),
    the nearest existing ancestor's line for a missing key, None when the text does not parse."""
    syntax = _SYNTAX_AT.search(error)
    if syntax:
        return int(syntax.group(1))
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in _parts(error.split(":", 1)[0]):
        child = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            child = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            key = next((k for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if key is not None:
                line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def located(text: str, errors: list[str]) -> list[tuple[int | None, str]]:
    """Each error with its line, in line order (errors without a line last)."""
    found = [(line_of(text, e), e) for e in errors]
    return sorted(found, key=lambda item: (item[0] is None, item[0] or 0))
