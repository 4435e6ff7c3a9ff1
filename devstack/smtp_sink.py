"""A local SMTP server that accepts every message and stores it as an .eml file in the outbox."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session


class OutboxHandler:
    """Writes each received message to `<outbox>/<time>-<seq>.eml`, atomically."""

    def __init__(self, outbox: Path):
        self.outbox = outbox
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self.sessions = 0  # SMTP sessions greeted: lets tests see connection reuse

    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """Greet the client and count the session."""
        session.host_name = hostname
        self.sessions += 1
        return responses

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        """Store the message in the outbox and accept it."""
        name = f"{time.time_ns()}-{os.getpid()}-{next(self._seq):06d}.eml"
        data = envelope.original_content or b""
        tmp = self.outbox / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.outbox / name)
        return "250 Message accepted for delivery"


def start_sink(outbox: Path, host: str = "127.0.0.1", port: int = 1025) -> Controller:
    """Start the sink on a background thread; call `.stop()` on the result to stop it."""
    controller = Controller(OutboxHandler(outbox), hostname=host, port=port, ready_timeout=10)
    controller.start()
    return controller


def read_outbox(outbox: Path) -> list[Any]:
    """Every stored message, parsed, oldest first."""
    from email import policy
    from email.parser import BytesParser

    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(p.read_bytes()) for p in sorted(outbox.glob("*.eml"))]
