"""Template compilation and rendering in the Jinja2 sandbox, inside the platform's base layouts."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal, overload

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from core.tenant_config import (
    Brand,
    EmailTemplate,
    PushTemplate,
    SmsTemplate,
    TemplateSet,
    WebhookTemplate,
)

# The variables the renderer provides to every template. Anything else is a typo.
CUSTOMER_VARIABLES = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "locale",
    "time_zone",
    "loyalty_tier",
    "city",
    "country",
    "external_id",
    "attributes",
)
RENDER_VARIABLES = frozenset((*CUSTOMER_VARIABLES, "brand", "campaign", "variant", "unsubscribe_url"))

# Text parts must never be HTML-escaped; HTML parts always are (autoescape by file name).
_html_env = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_text_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
_layout_env = SandboxedEnvironment(autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined)


class TemplateError(ValueError):
    """A template that does not compile or uses unknown variables; `errors` are `path: reason`."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def check_template(source: str, path: str, *, html: bool = False) -> list[str]:
    """Compile `source` and check its variables; returns `path: reason` strings (empty if fine)."""
    env = _html_env if html else _text_env
    try:
        ast = env.parse(source)
    except TemplateSyntaxError as exc:
        return [f"{path}: syntax error at line {exc.lineno}: {exc.message}"]
    errors = []
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name not in RENDER_VARIABLES:
            close = difflib.get_close_matches(name, sorted(RENDER_VARIABLES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            errors.append(f"{path}: unknown variable '{name}'{hint}")
    return errors


def check_template_set(name: str, tset: TemplateSet, prefix: str = "templates") -> list[str]:
    """Every problem in one named template, across channels and locales."""
    errors: list[str] = []
    contents = [(f"{prefix}.{name}", tset)] + [(f"{prefix}.{name}.locales.{loc}", c) for loc, c in tset.locales.items()]
    for path, content in contents:
        if content.email:
            errors += check_template(content.email.subject, f"{path}.email.subject")
            errors += check_template(content.email.html, f"{path}.email.html", html=True)
            if content.email.text is not None:
                errors += check_template(content.email.text, f"{path}.email.text")
        if content.sms:
            errors += check_template(content.sms.body, f"{path}.sms.body")
        if content.push:
            errors += check_template(content.push.title, f"{path}.push.title")
            errors += check_template(content.push.body, f"{path}.push.body")
            for key, value in content.push.data.items():
                errors += check_template(value, f"{path}.push.data.{key}")
        if content.webhook:
            for value_path, value in _payload_strings(content.webhook.payload, f"{path}.webhook.payload"):
                errors += check_template(value, value_path)
    return errors


def _payload_strings(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string inside a webhook payload (they are templates), with its path."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _payload_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _payload_strings(v, f"{path}[{i}]")]
    return []


@lru_cache(maxsize=4096)
def _compiled(source: str, html: bool) -> Any:
    return (_html_env if html else _text_env).from_string(source)


@lru_cache(maxsize=8)
def _layout(name: str) -> Any:
    source = resources.files("core.layouts").joinpath(name).read_text(encoding="utf-8")
    return _layout_env.from_string(source)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@overload
def content_for_locale(tset: TemplateSet, channel: Literal["email"], locale: str) -> EmailTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: Literal["sms"], locale: str) -> SmsTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: Literal["push"], locale: str) -> PushTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: Literal["webhook"], locale: str) -> WebhookTemplate | None: ...
@overload
def content_for_locale(tset: TemplateSet, channel: str, locale: str) -> Any: ...
def content_for_locale(tset: TemplateSet, channel: str, locale: str) -> Any:
    """The most specific `channel` template for `locale`: exact, then language, then default."""
    for key in (locale, locale.split("-")[0]):
        content = tset.locales.get(key)
        if content is not None and getattr(content, channel) is not None:
            return getattr(content, channel)
    return getattr(tset, channel)


def email_for_locale(tset: TemplateSet, locale: str) -> EmailTemplate | None:
    """The most specific email template for `locale` (see content_for_locale)."""
    return content_for_locale(tset, "email", locale)


def render_context(
    customer: dict[str, Any], brand: Brand, campaign: dict[str, Any], variant: str, unsubscribe_url: str
) -> dict[str, Any]:
    ctx = {k: customer.get(k) for k in CUSTOMER_VARIABLES}
    ctx["attributes"] = customer.get("attributes") or {}
    ctx.update(brand=brand.model_dump(), campaign=campaign, variant=variant, unsubscribe_url=unsubscribe_url)
    return ctx


def render_email(template: EmailTemplate, ctx: dict[str, Any], *, subject_override: str | None = None) -> RenderedEmail:
    """Render subject, HTML (inside the base layout) and text parts of one email."""
    subject = _compiled(subject_override or template.subject, False).render(ctx).strip()
    body_html = _compiled(template.html, True).render(ctx)
    html = _layout("email.html.j2").render(
        {**ctx, "subject": subject, "content": Markup(body_html), "locale": ctx.get("locale") or "en"}
    )
    if template.text is not None:
        text = _compiled(template.text, False).render(ctx)
    else:
        text = Markup(body_html).striptags()
    text += f"\n\n--\n{ctx['brand']['name']} · Unsubscribe: {ctx['unsubscribe_url']}\n"
    return RenderedEmail(subject=subject, html=html, text=text)


# SMS, push and webhook content: text templates (never HTML-escaped), rendered in the same
# sandbox with StrictUndefined.

_text_layout_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


@lru_cache(maxsize=8)
def _text_layout(name: str) -> Any:
    source = resources.files("core.layouts").joinpath(name).read_text(encoding="utf-8")
    return _text_layout_env.from_string(source)


@dataclass(frozen=True)
class RenderedSms:
    body: str


@dataclass(frozen=True)
class RenderedPush:
    title: str
    body: str
    data: dict[str, str]


@dataclass(frozen=True)
class RenderedWebhook:
    payload: dict[str, Any]


def render_sms(template: SmsTemplate, ctx: dict[str, Any]) -> RenderedSms:
    """The tenant's SMS body, then the platform opt-out footer on its own line (always)."""
    body = _compiled(template.body, False).render(ctx).strip()
    footer = _text_layout("sms_footer.txt.j2").render(ctx).strip()
    return RenderedSms(body=f"{body}\n{footer}" if footer else body)


def render_push(template: PushTemplate, ctx: dict[str, Any]) -> RenderedPush:
    """Title, body and every data value of one notification."""
    return RenderedPush(
        title=_compiled(template.title, False).render(ctx).strip(),
        body=_compiled(template.body, False).render(ctx).strip(),
        data={k: _compiled(v, False).render(ctx) for k, v in template.data.items()},
    )


def render_webhook(template: WebhookTemplate, ctx: dict[str, Any]) -> RenderedWebhook:
    """The payload with every string value rendered; keys and non-string values stay as they are."""
    return RenderedWebhook(payload=_render_payload(template.payload, ctx))


def _render_payload(value: Any, ctx: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _compiled(value, False).render(ctx)
    if isinstance(value, dict):
        return {k: _render_payload(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_payload(v, ctx) for v in value]
    return value
