"""DKIM signing cost per message: CPU time to sign a typical campaign email (HTML and text parts,
List-Unsubscribe headers) with the platform's signer (core/deliverability/dkim.py: dkimpy's
relaxed canonicalisation, the `cryptography` library's RSA-2048), beside the goal of issue 29
(about 1.5 ms per message) and dkimpy's own pure-Python signer for comparison.

    .venv/bin/python -m benchmarks.dkim_sign [messages]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import dkim

from activities.channels.base import OutboundMessage
from activities.channels.email_smtp import build_message
from core.configs.checks import load_config_file
from core.content.templating import RenderedEmail
from core.deliverability.dkim import SIGNED_HEADERS, DkimSigner, generate_key, sending_domain

GOAL_MS = 1.5
ROOT = Path(__file__).resolve().parent.parent


def main(count: int = 2000) -> None:
    config = load_config_file(ROOT / "tenant_configs" / "freshmart.yaml")
    html = "<html><body><h1>Weekly deals</h1>" + "<p><a href='https://t.example/c/abc'>Deal</a> fresh fruit</p>" * 120
    text = "Weekly deals\n" + "Deal: fresh fruit https://t.example/c/abc\n" * 120
    headers = {"List-Unsubscribe": "<https://x.test/u/abc>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    messages = [
        build_message(
            config,
            OutboundMessage(f"bench:{i}", i, f"c{i}@example.org", RenderedEmail("Your deals", html, text), headers),
        )
        for i in range(count)
    ]
    pem, _ = generate_key()
    signer = DkimSigner.from_pem(sending_domain(config), "bench", pem)
    start = time.process_time()
    for raw in messages:
        signer.sign(raw)
    ours = (time.process_time() - start) / count * 1000
    sample = messages[: max(1, count // 20)]
    start = time.process_time()
    for raw in sample:
        dkim.sign(raw, b"bench", sending_domain(config).encode(), pem.encode(), canonicalize=(b"relaxed", b"relaxed"),
                  include_headers=list(SIGNED_HEADERS))  # fmt: skip
    theirs = (time.process_time() - start) / len(sample) * 1000
    size = sum(map(len, messages)) / count
    print(f"DKIM signing, {count} messages of {size / 1024:.1f} KiB (RSA-2048, relaxed/relaxed)")
    print(f"  platform signer (cryptography RSA): {ours:.3f} ms CPU/message   goal ≤ {GOAL_MS} ms")
    print(f"  dkimpy's own signer (pure Python):  {theirs:.3f} ms CPU/message   ({theirs / ours:.0f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
