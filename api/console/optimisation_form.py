"""The editor's optimisation fields, both ways: experiment (winner or adaptive), send time
(optimal), delivery (all or first_available) and fallback become the same JSON the API's
campaign body takes, and a stored campaign fills them. Blank fields are left out, so the
API's defaults apply and its validation names every field."""

from __future__ import annotations

from typing import Any

from core.campaigns.spec import CampaignSpec

EXPERIMENT_FIELDS = (
    "metric", "test_percent", "decide_after", "confidence", "min_per_variant", "if_inconclusive", "floor",
)  # fmt: skip
# Fields whose errors are shown one level deeper than the top field (`experiment.metric`, …).
NESTED = ("experiment", "fallback", "send_time")


def _one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0].strip()


def form_values(form: dict[str, list[str]]) -> dict[str, Any]:
    """The optimisation fields as the editor shows them again (on errors) and as `body` reads them."""
    return {
        "experiment_mode": _one(form, "experiment_mode"),
        **{f"experiment_{f}": _one(form, f"experiment_{f}") for f in EXPERIMENT_FIELDS},
        "send_time_within_hours": _one(form, "send_time_within_hours"),
        "send_time_fallback_local_time": _one(form, "send_time_fallback_local_time"),
        "delivery": _one(form, "delivery") or "all",
        "fallback_channel": _one(form, "fallback_channel"),
        "fallback_unless": _one(form, "fallback_unless") or "clicked",
        "fallback_after": _one(form, "fallback_after"),
    }


def body(values: dict[str, Any]) -> dict[str, Any]:
    """The campaign body's experiment, send_time, delivery and fallback for the form's values."""
    out: dict[str, Any] = {"delivery": values["delivery"]}
    if values["experiment_mode"]:
        experiment = {"mode": values["experiment_mode"]}
        experiment |= {f: values[f"experiment_{f}"] for f in EXPERIMENT_FIELDS if values[f"experiment_{f}"]}
        out["experiment"] = experiment
    if values.get("when") == "optimal":
        send_time = {"mode": "optimal"}
        for f in ("within_hours", "fallback_local_time"):
            if values[f"send_time_{f}"]:
                send_time[f] = values[f"send_time_{f}"]
        out["send_time"] = send_time
    if values["fallback_channel"]:
        fallback = {"channel": values["fallback_channel"], "unless": values["fallback_unless"]}
        if values["fallback_after"]:
            fallback["after"] = values["fallback_after"]
        out["fallback"] = fallback
    return out


def _shown(value: float | str | None) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def from_spec(spec: CampaignSpec) -> dict[str, Any]:
    """The optimisation fields' values for a stored campaign (only what it sets explicitly)."""
    exp, opt, fb = spec.experiment, spec.send_time, spec.fallback
    values: dict[str, Any] = {
        "experiment_mode": exp.mode if exp else "",
        **{
            f"experiment_{f}": _shown(getattr(exp, f)) if exp and f in exp.model_fields_set else ""
            for f in EXPERIMENT_FIELDS
        },
        "send_time_within_hours": str(opt.within_hours) if opt and "within_hours" in opt.model_fields_set else "",
        "send_time_fallback_local_time": (
            opt.fallback_local_time.strftime("%H:%M") if opt and "fallback_local_time" in opt.model_fields_set else ""
        ),
        "delivery": spec.delivery,
        "fallback_channel": fb.channel if fb else "",
        "fallback_unless": fb.unless if fb else "clicked",
        "fallback_after": _shown(fb.after) if fb else "",
    }
    return values


def error_field(path: str) -> str | None:
    """The editor field an error path names (`experiment.test_percent`), or None when it is not one of these."""
    parts = path.split(".")
    if parts[0] in NESTED and len(parts) > 1:
        return ".".join(parts[:2])  # `fallback.after.float` (a union's branch) is `fallback.after`
    return parts[0] if parts[0] in (*NESTED, "delivery") else None
