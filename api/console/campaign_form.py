"""The campaign editor's form and the API's campaign body, both ways: a form becomes the same
JSON body POST /campaigns takes (so it is validated by the same model), and a stored campaign
fills the form."""

from __future__ import annotations

import json
from typing import Any

from api.console import optimisation_form
from core.campaigns.spec import CampaignSpec

VARIANT_FIELDS = ("key", "template", "weight", "subject")


def form_values(form: dict[str, list[str]]) -> dict[str, Any]:
    """What the form holds, as the editor shows it again (on errors) and as `body` reads it."""
    variants: list[dict[str, str]] = []
    columns = [form.get(f"variant_{f}", []) for f in VARIANT_FIELDS]
    for row in zip(*columns, strict=False):
        values = dict(zip(VARIANT_FIELDS, (v.strip() for v in row), strict=True))
        if any(values.values()):
            variants.append(values)

    def one(name: str) -> str:
        return (form.get(name) or [""])[0].strip()

    return {
        "name": one("name"),
        "segment_mode": one("segment_mode") or "named",
        "segment_name": one("segment_name"),
        "segment_json": one("segment_json"),
        "channels": form.get("channels", []),
        "variants": variants or [dict.fromkeys(VARIANT_FIELDS, "")],
        "holdout_percent": one("holdout_percent"),
        "when": one("when") or "now",
        "send_at": one("send_at"),
        "local_send_time": one("local_send_time"),
        "if_local_time_passed": one("if_local_time_passed") or "next_day",
        "tracking": bool(form.get("tracking")),
        **optimisation_form.form_values(form),
    }


def body(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The API body for the form's values, and the problems only the form can have (inline
    segment JSON that does not parse); everything else is left to CampaignSpec to name."""
    errors: list[str] = []
    out: dict[str, Any] = {"name": values["name"], "channels": values["channels"], "tracking": values["tracking"]}
    if values["segment_mode"] == "inline":
        try:
            out["segment"] = json.loads(values["segment_json"] or "{}")
        except json.JSONDecodeError as exc:
            errors.append(f"segment: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
    elif values["segment_mode"] == "named":
        out["segment"] = values["segment_name"]
    variants = []
    for row in values["variants"]:
        variant: dict[str, Any] = {"key": row["key"], "template": row["template"]}
        if row.get("weight"):
            variant["weight"] = row["weight"]
        if row.get("subject"):
            variant["subject"] = row["subject"]
        variants.append(variant)
    out["variants"] = variants
    if values["holdout_percent"]:
        out["holdout_percent"] = values["holdout_percent"]
    if values["when"] == "at":
        out["send_at"] = values["send_at"] or None
    elif values["when"] == "local":
        out["local_send_time"] = values["local_send_time"] or None
        out["if_local_time_passed"] = values["if_local_time_passed"]
    out |= optimisation_form.body(values)
    return out, errors


def from_spec(spec: CampaignSpec) -> dict[str, Any]:
    """The editor's values for a stored campaign."""
    named = isinstance(spec.segment, str)
    when = "optimal" if spec.send_time else "at" if spec.send_at else "local" if spec.local_send_time else "now"
    return {
        "name": spec.name,
        "segment_mode": "named" if named else "inline",
        "segment_name": spec.segment if named else "",
        "segment_json": "" if named else json.dumps(spec.segment, indent=2),
        "channels": list(spec.channels),
        "variants": [
            {
                "key": v.key,
                "template": v.template,
                "weight": f"{v.weight:g}" if "weight" in v.model_fields_set else "",
                "subject": v.subject or "",
            }
            for v in spec.variants
        ],
        "holdout_percent": f"{spec.holdout_percent:g}" if "holdout_percent" in spec.model_fields_set else "",
        "when": when,
        "send_at": spec.send_at.isoformat() if spec.send_at else "",
        "local_send_time": spec.local_send_time.strftime("%H:%M") if spec.local_send_time else "",
        "if_local_time_passed": spec.if_local_time_passed,
        "tracking": spec.tracking,
        **optimisation_form.from_spec(spec),
    }


def field_errors(errors: list[str]) -> dict[str, list[str]]:
    """Errors by the form field they name: `name`, `segment`, `channels`, `variants[0]`, … ."""
    out: dict[str, list[str]] = {}
    for line in errors:
        path = line.split(":", 1)[0].removeprefix("body.")
        head = optimisation_form.error_field(path) or path.split(".", 1)[0]
        if head.startswith("variants[") or head.startswith("channels["):
            head = head.split("]", 1)[0] + "]" if head.startswith("variants[") else "channels"
        out.setdefault(head, []).append(line)
    return out
