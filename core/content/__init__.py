"""Content: the channel registry, the template engine (Jinja2's sandbox with bounded work), the one
rendering path and its save-time checks, and the base layouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core import lazy_exports

if TYPE_CHECKING:
    from core.content.channels import CHANNELS, message_key, parse_message_key
    from core.content.check_pool import CheckPool, run_check
    from core.content.rendering import (
        RenderError,
        check_campaign_templates,
        check_part,
        check_template_set,
        check_text,
        render_message,
        sample_customer,
    )
    from core.content.templating import (
        CUSTOMER_VARIABLES,
        EMAIL_HTML,
        EMAIL_SUBJECT,
        MAX_RANGE,
        SMS_BODY,
        TIME_BUDGET_SECONDS,
        RenderedEmail,
        RenderedPush,
        RenderedSms,
        RenderedWebhook,
        RenderFailure,
        TemplateError,
        check_source,
        content_for_locale,
        email_for_locale,
        render_context,
        render_part,
        render_push,
        render_sms,
        render_webhook,
    )

_EXPORTS = {
    "CHANNELS": "channels",
    "CheckPool": "check_pool",
    "CUSTOMER_VARIABLES": "templating",
    "EMAIL_HTML": "templating",
    "EMAIL_SUBJECT": "templating",
    "MAX_RANGE": "templating",
    "RenderError": "rendering",
    "RenderFailure": "templating",
    "RenderedEmail": "templating",
    "RenderedPush": "templating",
    "RenderedSms": "templating",
    "RenderedWebhook": "templating",
    "SMS_BODY": "templating",
    "TIME_BUDGET_SECONDS": "templating",
    "TemplateError": "templating",
    "check_campaign_templates": "rendering",
    "check_part": "rendering",
    "check_source": "templating",
    "check_template_set": "rendering",
    "check_text": "rendering",
    "content_for_locale": "templating",
    "email_for_locale": "templating",
    "message_key": "channels",
    "parse_message_key": "channels",
    "render_context": "templating",
    "render_message": "rendering",
    "render_part": "templating",
    "render_push": "templating",
    "render_sms": "templating",
    "render_webhook": "templating",
    "run_check": "check_pool",
    "sample_customer": "rendering",
}
__all__ = [
    "CHANNELS",
    "CUSTOMER_VARIABLES",
    "EMAIL_HTML",
    "EMAIL_SUBJECT",
    "MAX_RANGE",
    "SMS_BODY",
    "TIME_BUDGET_SECONDS",
    "CheckPool",
    "RenderError",
    "RenderFailure",
    "RenderedEmail",
    "RenderedPush",
    "RenderedSms",
    "RenderedWebhook",
    "TemplateError",
    "check_campaign_templates",
    "check_part",
    "check_source",
    "check_template_set",
    "check_text",
    "content_for_locale",
    "email_for_locale",
    "message_key",
    "parse_message_key",
    "render_context",
    "render_message",
    "render_part",
    "render_push",
    "render_sms",
    "render_webhook",
    "run_check",
    "sample_customer",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
