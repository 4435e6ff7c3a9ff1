"""The DNS records a sending domain needs, and a check that looks them up.

A domain needs: a DKIM TXT record per live selector (`<selector>._domainkey.<domain>`), an SPF
record including the platform's (`include:<MAIL_SPF_INCLUDE>`), a DMARC policy (`_dmarc.<domain>`;
`p=none` is suggested to start), and a bounce subdomain (`bounces.<domain>` CNAME to
MAIL_BOUNCE_HOST) for the return path. The check asks one name server (DNS_NAMESERVER; the
loopback DNS server in dev and tests, never the internet there) and reports each record as
present, missing or wrong (something else is published there).
"""

from __future__ import annotations

import asyncio
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
from pydantic import BaseModel, Field

from core.deliverability.dkim import DkimKey

BOUNCE_LABEL = "bounces"
# One lookup's budget: a check of four records answers within a few seconds even when the name
# server does not.
LOOKUP_SECONDS = 2.0


class DnsRecord(BaseModel):
    """One record the domain should publish."""

    purpose: Literal["dkim", "spf", "dmarc", "bounce"]
    type: Literal["TXT", "CNAME"]
    name: str
    value: str = Field(
        description="what to publish (for SPF and DMARC, a suggestion: the check looks for its key part)"
    )
    selector: str | None = Field(default=None, description="DKIM: the selector")
    state: str | None = Field(default=None, description="DKIM: next (publish now), active (signing), retiring")


class RecordCheck(DnsRecord):
    """A record and what the name server answered for it."""

    status: Literal["present", "missing", "wrong"]
    found: list[str] = Field(default_factory=list, description="what is published there now")


class DomainRecords(BaseModel):
    """A sending domain and its records."""

    domain: str
    records: list[DnsRecord]


class DomainCheck(BaseModel):
    """The outcome of looking a domain's records up."""

    domain: str
    ok: bool = Field(description="every record present")
    records: list[RecordCheck]

    @property
    def missing(self) -> list[str]:
        """The records not present, as `purpose name` (what a refusal names)."""
        return [f"{r.purpose} {r.name} ({r.status})" for r in self.records if r.status != "present"]


def required_records(domain: str, keys: list[DkimKey], spf_include: str, bounce_host: str) -> DomainRecords:
    """What `domain` needs published, for its DKIM `keys`."""
    records = [
        DnsRecord(
            purpose="dkim", type="TXT", name=k.record_name, value=k.record_value, selector=k.selector, state=k.state
        )
        for k in keys
    ]
    records += [
        DnsRecord(purpose="spf", type="TXT", name=domain, value=f"v=spf1 include:{spf_include} ~all"),
        DnsRecord(
            purpose="dmarc", type="TXT", name=f"_dmarc.{domain}", value=f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"
        ),
        DnsRecord(purpose="bounce", type="CNAME", name=f"{BOUNCE_LABEL}.{domain}", value=f"{bounce_host}."),
    ]
    return DomainRecords(domain=domain, records=records)


def resolver(nameserver: str | None) -> dns.asyncresolver.Resolver:
    """A resolver asking `nameserver` (`host:port`, or the system's when None)."""
    if nameserver is None:
        res = dns.asyncresolver.Resolver()
    else:
        host, _, port = nameserver.rpartition(":")
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = [host or nameserver]
        res.port = int(port) if host else 53
    res.lifetime = LOOKUP_SECONDS
    res.use_edns(0, 0, 1232)  # a DKIM TXT of an RSA-2048 key is near UDP's 512 bytes
    return res


async def _lookup(res: dns.asyncresolver.Resolver, name: str, rtype: str) -> list[str]:
    """What `name` publishes as `rtype` (TXT strings joined, CNAME targets); [] when nothing."""
    try:
        answer = await res.resolve(name, rtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return []
    except dns.exception.Timeout:
        return []
    if rtype == "TXT":
        return [b"".join(r.strings).decode(errors="replace") for r in answer]
    return [r.to_text() for r in answer]


def _tags(value: str) -> dict[str, str]:
    """A DKIM or DMARC record's tags (`k=v; …`), whitespace removed."""
    tags = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            tags[key.strip()] = "".join(val.split())
    return tags


def _status(record: DnsRecord, found: list[str]) -> Literal["present", "missing", "wrong"]:
    if record.purpose == "dkim":
        want = _tags(record.value)["p"]
        keys = [v for v in found if v.startswith("v=DKIM1") or "p=" in v]
        if not keys:
            return "missing"
        return "present" if any(_tags(v).get("p") == want for v in keys) else "wrong"
    if record.purpose == "spf":
        spf = [v for v in found if v.split()[:1] == ["v=spf1"]]
        if not spf:
            return "missing"
        include = record.value.split()[1]
        return "present" if len(spf) == 1 and include in spf[0].split() else "wrong"
    if record.purpose == "dmarc":
        dmarc = [v for v in found if v.replace(" ", "").startswith("v=DMARC1")]
        if not found:
            return "missing"
        return (
            "present" if len(dmarc) == 1 and _tags(dmarc[0]).get("p") in ("none", "quarantine", "reject") else "wrong"
        )
    if not found:
        return "missing"
    return "present" if any(v.rstrip(".").lower() == record.value.rstrip(".").lower() for v in found) else "wrong"


async def check_domain(records: DomainRecords, nameserver: str | None) -> DomainCheck:
    """Look each of `records` up at `nameserver`; the outcome per record."""
    res = resolver(nameserver)
    found = await asyncio.gather(*(_lookup(res, r.name, r.type) for r in records.records))
    checks = [
        RecordCheck(**r.model_dump(), status=_status(r, f), found=f)
        for r, f in zip(records.records, found, strict=True)
    ]
    return DomainCheck(domain=records.domain, ok=all(c.status == "present" for c in checks), records=checks)
