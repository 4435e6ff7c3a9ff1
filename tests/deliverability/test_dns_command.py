"""`pennant dns`, as `pennant dev` runs it: a process serving the demo domains' records and the
platform's DKIM keys on loopback, read by dnspython as the sink and the records check read it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import dns.asyncresolver
import dns.exception
import dns.resolver
import pytest

from tests.helpers.stack import ROOT, free_port
from tests.helpers.tenants import MakeTenant
from tests.helpers.waiting import until


@pytest.fixture
def dns_command(database_url: str) -> Iterator[int]:
    """`pennant dns` on a free port, as the application role; its port."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "DNS_PORT": str(port),
           "TENANT_CONFIGS_DIR": str(ROOT / "tenant_configs")}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "devstack.cli", "dns"], env=env, cwd=ROOT)
    yield port
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def _resolver(port: int) -> dns.asyncresolver.Resolver:
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers, res.port, res.lifetime = ["127.0.0.1"], port, 1.0
    res.use_edns(0, 0, 1232)
    return res


async def test_pennant_dns_serves_demo_records_and_generated_keys(dns_command: int, make_tenant: MakeTenant) -> None:
    res = _resolver(dns_command)

    async def spf() -> list[str]:
        try:
            answer = await res.resolve("freshmart.example.com", "TXT")
        except (dns.resolver.NoNameservers, dns.exception.Timeout):
            return []
        return [b"".join(r.strings).decode() for r in answer]

    await until(spf, within=20, what="pennant dns to answer")
    assert await spf() == ["v=spf1 include:spf.pennant.example ~all"]
    answer = await res.resolve("bounces.wellcare.example.com", "CNAME")
    assert [r.to_text() for r in answer] == ["bounces.pennant.example."]

    tenant = await make_tenant("quickstop", customers=0)
    [domain] = (await tenant.http.get(tenant.url("/sending-domains"))).json()
    [dkim] = [r for r in domain["records"] if r["purpose"] == "dkim"]
    answer = await res.resolve(dkim["name"], "TXT")
    assert [b"".join(r.strings).decode() for r in answer] == [dkim["value"]]
    with pytest.raises(dns.resolver.NXDOMAIN):
        await res.resolve("nothing.example.org", "TXT")
