"""Template compilation and rendering in the Jinja2 sandbox, inside the platform's base layouts."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, meta, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from core.tenant_config import Brand, EmailTemplate, TemplateSet, TenantConfig

# The variables the renderer provides to every template. Anything else is a typo.
CUSTOMER_VARIABLES = (
    "first_name", "last_name", "email", "phone", "locale", "time_zone",
    "loyalty_tier", "city", "country", "external_id", "attributes",
)
RENDER_VARIABLES = frozenset(
    (*CUSTOMER_VARIABLES, "brand", "campaign", "variant", "unsubscribe_url")
)

# Text parts must never be HTML-escaped; HTML parts always are (autoescape by file name).
_html_env = SandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_text_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
_layout_env = SandboxedEnvironment(
    autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined
)


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
    contents = [(f"{prefix}.{name}", tset)] + [
        (f"{prefix}.{name}.locales.{loc}", c) for loc, c in tset.locales.items()
    ]
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
    return errors


def check_config_templates(config: TenantConfig) -> list[str]:
    errors: list[str] = []
    for name, tset in config.templates.items():
        errors += check_template_set(name, tset)
    return errors


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


def email_for_locale(tset: TemplateSet, locale: str) -> EmailTemplate | None:
    """The most specific email template for `locale`: exact, then language, then default."""
    for key in (locale, locale.split("-")[0]):
        content = tset.locales.get(key)
        if content is not None and content.email is not None:
            return content.email
    return tset.email


def render_context(
    customer: dict[str, Any], brand: Brand, campaign: dict[str, Any], variant: str, unsubscribe_url: str
) -> dict[str, Any]:
    ctx = {k: customer.get(k) for k in CUSTOMER_VARIABLES}
    ctx["attributes"] = customer.get("attributes") or {}
    ctx.update(
        brand=brand.model_dump(), campaign=campaign, variant=variant, unsubscribe_url=unsubscribe_url
    )
    return ctx


def render_email(
    template: EmailTemplate, ctx: dict[str, Any], *, subject_override: str | None = None
) -> RenderedEmail:
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
