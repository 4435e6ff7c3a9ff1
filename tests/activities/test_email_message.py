"""The raw RFC 5322 message the SMTP adapter writes parses back to what was rendered."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

from activities.channels.base import OutboundMessage
from activities.channels.email_smtp import build_message, message_id
from core.configs.checks import load_config_file
from core.content.templating import RenderedEmail
from tests.helpers.asserts import not_none

ROOT = Path(__file__).resolve().parents[2]


def test_the_raw_message_round_trips_headers_and_both_parts() -> None:
    config = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
    config = config.model_copy(update={"brand": config.brand.model_copy(update={"from_name": "Épicerie Fraîche"})})
    subject = "Élodie, les aubaines de la semaine sont arrivées — " + "x" * 80
    text = "Bonjour Élodie!\n.A line starting with a period\n" + "long " * 40 + "\n"
    html = "<h1>Bonjour Élodie</h1>\n<p>" + "très long " * 30 + "</p>"
    key = "freshmart:run:42:email"
    raw = build_message(
        config,
        OutboundMessage(
            key,
            42,
            "elodie@example.com",
            RenderedEmail(subject, html, text),
            {"List-Unsubscribe": "<https://x.test/u/abc>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        ),
    )
    assert all(len(line) <= 998 for line in raw.split(b"\r\n")), "SMTP line limit"
    assert raw.isascii(), "8-bit content is encoded, so any relay accepts it"
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == "Épicerie Fraîche"
    assert message["From"].addresses[0].addr_spec == "deals@freshmart.example.com"
    assert message["To"] == "elodie@example.com"
    assert message["Reply-To"] == "help@freshmart.example.com"
    assert message["Message-ID"] == message_id(key, "freshmart")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert not_none(message.get_body(("plain",))).get_content().replace("\r\n", "\n") == text
    assert not_none(message.get_body(("html",))).get_content().replace("\r\n", "\n") == html
