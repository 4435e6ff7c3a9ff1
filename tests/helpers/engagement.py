"""Engagement as a person produces it: the open pixel and tracked links of the emails a run
delivered to the SMTP sink, hit through the real tracking endpoints."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from devstack.smtp_sink import read_outbox

BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.0 Safari/605.1.15"
)
_PIXEL = re.compile(r'<img src="https?://[^/"]+(/t/o/[A-Za-z0-9_-]+)"')
_CLICK = re.compile(r'href="https?://[^/"]+(/t/c/[A-Za-z0-9_-]+)"')


def run_emails(workdir: Path, run_id: str) -> dict[int, Any]:
    """The run's emails in the SMTP sink, by customer id (from the idempotency key header)."""
    found = {}
    for message in read_outbox(workdir / "outbox", containing=f":{run_id}:"):
        key = message["X-Pennant-Idempotency-Key"] or ""
        if f":{run_id}:" in key:
            found[int(key.split(":")[2])] = message
    return found


def _html(message: Any) -> str:
    return str(message.get_body(("html",)).get_content())


async def open_email(api_url: str, message: Any, user_agent: str = BROWSER) -> None:
    """Load the email's open pixel from the tracking endpoint, as a mail client would."""
    pixel = _PIXEL.search(_html(message))
    assert pixel is not None, "the email has no open pixel"
    async with httpx.AsyncClient(base_url=api_url, headers={"User-Agent": user_agent}) as public:
        response = await public.get(urlparse(pixel.group(1)).path)
    assert response.status_code == 200, response.text


async def click_email(api_url: str, message: Any, user_agent: str = BROWSER) -> None:
    """Follow the email's first tracked link through the tracking endpoint."""
    links = _CLICK.findall(_html(message))
    assert links, "the email has no tracked link"
    async with httpx.AsyncClient(base_url=api_url, headers={"User-Agent": user_agent}) as public:
        response = await public.get(links[0])
    assert response.status_code == 302, response.text
