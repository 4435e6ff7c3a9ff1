"""The allow list the local stack and the tests give the guarded outbound client: exactly the
provider simulator's message paths (and its chat-completions stand-in) and the SMTP sink, never
the simulator's `/_sim/*` control routes."""

from __future__ import annotations

from urllib.parse import urlsplit

# The simulator's routes a tenant endpoint may name (devstack/provider_simulator.py).
SIMULATOR_MESSAGE_PATHS = ("/sms", "/push", "/webhook", "/v1/chat/completions")


def dev_egress_allow(provider_base_url: str, smtp_host: str, smtp_port: int) -> str:
    """EGRESS_ALLOW for a stack whose simulator is at `provider_base_url` and SMTP sink at
    `smtp_host:smtp_port`: plaintext to those, and nothing else on loopback."""
    url = urlsplit(provider_base_url)
    base = f"{url.scheme}://{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
    prefix = url.path.rstrip("/")
    entries = [f"{base}{prefix}{path}" for path in SIMULATOR_MESSAGE_PATHS]
    entries.append(f"smtp+plain://{smtp_host}:{smtp_port}")
    return ",".join(entries)
