"""The guarded outbound client against real listeners on loopback and a real DNS server: every
address form it refuses (and a public one of each form it lets through), the allow list, the
whole-call deadline and size cap, and the rebinding case."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from core.security.egress import (
    EgressError,
    EgressGuard,
    EgressRefused,
    Resolver,
    allowing,
    literal_never_passes,
    parse_allow_entry,
    parse_target,
    refused_class,
)
from tests.helpers.listeners import dns_server, listening
from tests.helpers.stack import free_port

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "198.18.0.1",  # benchmarking
    "198.19.255.1",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",  # multicast (is_global says True on 3.11)
    "239.255.255.250",
    "192.0.0.8",
    "::1",
    "::",
    "fe80::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fc00::1",
    "fec0::1",  # site-local
    "ff02::1",  # multicast
    "ff0e::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::10.0.0.1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1 (obfuscated)
    "2001:0:7f00:1:8000:63bf:f7f7:f7f6",  # Teredo whose server is 127.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::7f00:1",  # local-use NAT64, /96 reading
    "64:ff9b:1:7f00:0:100::",  # local-use NAT64, /48 reading of 127.0.0.1
    "2001:db8::1",  # documentation
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",  # mapped public
    "::8.8.8.8",  # compatible public
    "2002:808:808::",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: server 65.54.227.120, client 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]


@pytest.mark.parametrize("address", REFUSED)
def test_every_non_public_address_form_is_refused(address: str) -> None:
    assert refused_class(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_of_every_form_passes(address: str) -> None:
    assert refused_class(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pw@example.com/",
        "https://user@example.com/",
        "https://example.com@127.0.0.1/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "https:///nohost",
        "https://[fe80::1%25eth0]/",
        "https://example.com:99999/",
    ],
)
def test_userinfo_other_schemes_and_odd_hosts_are_refused_at_parse(url: str) -> None:
    with pytest.raises(EgressRefused):
        parse_target(url)


def test_one_parse_gives_scheme_host_port_and_path() -> None:
    target = parse_target("https://API.example.com./v1/chat?x=1")
    assert (target.scheme, target.host, target.port, target.path) == ("https", "api.example.com", 443, "/v1/chat")
    assert parse_target("https://[2606:4700::1]:8443/").host == "2606:4700::1"


def test_allow_entries_match_address_port_and_path_prefix() -> None:
    entry = parse_allow_entry("http://127.0.0.1:8030/sms")
    assert entry.matches("http", 8030, "/sms") and entry.matches("http", 8030, "/sms/2010-04-01/x")
    assert not entry.matches("http", 8030, "/smsx") and not entry.matches("http", 8030, "/_sim/faults")
    assert not entry.matches("https", 8030, "/sms") and not entry.matches("http", 8031, "/sms")
    plain = parse_allow_entry("smtp+plain://127.0.0.1:1025")
    assert plain.matches("smtp", 1025, "/") and plain.plaintext
    for bad in ("gopher://x:1", "http://127.0.0.1", "smtp+plain://127.0.0.1:25/path", "http://u@127.0.0.1:1"):
        with pytest.raises(ValueError):
            parse_allow_entry(bad)


def test_a_literal_address_that_can_never_pass_is_known_at_save() -> None:
    https = ("https",)
    assert literal_never_passes("https://169.254.169.254/latest", https)
    assert literal_never_passes("https://[::ffff:127.0.0.1]:8000/v1", https)
    assert literal_never_passes("http://example.com/v1", ("http", "https"))  # plaintext, no entry
    assert literal_never_passes("https://8.8.8.8/v1", https) is None
    assert literal_never_passes("https://llm.example.com/v1", https) is None  # names: checked at send
    port = free_port()
    with allowing(f"http://127.0.0.1:{port}/hook"):
        assert literal_never_passes(f"http://127.0.0.1:{port}/hook/x", ("http", "https")) is None
        assert literal_never_passes(f"http://127.0.0.1:{port}/other", ("http", "https"))
    assert literal_never_passes(f"http://127.0.0.1:{port}/hook/x", ("http", "https"))


async def test_a_loopback_listener_gets_no_connection_unless_allowed() -> None:
    async with listening() as listener, EgressGuard() as guard:
        for url in (
            f"https://127.0.0.1:{listener.port}/",
            f"https://localhost:{listener.port}/",
            f"https://[::ffff:127.0.0.1]:{listener.port}/",
            f"http://127.0.0.1:{listener.port}/",  # plaintext without an entry
        ):
            with pytest.raises(EgressRefused) as refused:
                await guard.post(url, json={})
            assert refused.value.word == "refused"
        assert listener.connections == 0

        with allowing(f"http://127.0.0.1:{listener.port}/ok"):
            response = await guard.post(f"{listener.url}/ok/1", json={"a": 1})
            assert response.status_code == 200 and response.json() == {"ok": True}
            with pytest.raises(EgressRefused):  # another path on the same listener
                await guard.post(f"{listener.url}/_sim/faults", json={})
        assert len(listener.requests) == 1
        with pytest.raises(EgressRefused):  # the allowance ended with its block
            await guard.post(f"{listener.url}/ok/1", json={})


async def test_redirects_are_not_followed_and_bodies_are_capped() -> None:
    async with (
        listening(status=302) as redirect,
        listening(endless=True) as flood,
        EgressGuard(max_bytes=10_000) as guard,
    ):
        with allowing(f"http://127.0.0.1:{redirect.port}", f"http://127.0.0.1:{flood.port}"):
            response = await guard.post(redirect.url, json={})
            assert response.status_code == 302 and len(redirect.requests) == 1
            with pytest.raises(EgressError) as big:
                await guard.post(flood.url, json={})
            assert big.value.word == "too large"


async def test_a_trickling_server_meets_the_whole_call_deadline() -> None:
    async with listening(body=b"x" * 100, trickle=0.05) as slow, EgressGuard(deadline_seconds=0.5) as guard:
        with allowing(f"http://127.0.0.1:{slow.port}"):
            with pytest.raises(EgressError) as late:
                await guard.post(slow.url, json={})
    assert late.value.word == "timeout"


async def test_a_closed_port_is_just_unreachable() -> None:
    port = free_port()
    async with EgressGuard() as guard:
        with allowing(f"http://127.0.0.1:{port}"):
            with pytest.raises(EgressError) as closed:
                await guard.post(f"http://127.0.0.1:{port}/", json={})
    assert closed.value.word == "unreachable" and not isinstance(closed.value, EgressRefused)


async def test_tls_is_verified_even_to_an_allowed_address() -> None:
    # An allowed https address still needs a certificate valid for the name: a plain TCP
    # listener (no TLS at all) is a failure, not a fallback to plaintext.
    async with listening() as listener, EgressGuard() as guard:
        with allowing(f"https://127.0.0.1:{listener.port}"):
            with pytest.raises(EgressError) as failed:
                await guard.post(f"https://127.0.0.1:{listener.port}/", json={})
    assert failed.value.word == "unreachable"
    assert listener.requests == []


async def test_rebinding_never_reaches_the_refused_listener() -> None:
    # One name answers 127.0.0.1 (allowed for this port) and 127.0.0.2 (not) in turn; both
    # addresses have a listener on the same port. The check happens in the connect, on the
    # address connected to, so the second answer never gets a connection.
    async with listening("127.0.0.1") as allowed, listening("127.0.0.2", allowed.port) as refused:
        with dns_server(["127.0.0.1"], ["127.0.0.2"]) as (nameserver, answers):
            with allowing(f"http://127.0.0.1:{allowed.port}"):
                outcomes = []
                for _ in range(6):
                    # A fresh guard each time: no pooled connection, every call resolves again.
                    async with EgressGuard(resolver=Resolver(nameserver)) as guard:
                        try:
                            await guard.post(f"http://rebind.test:{allowed.port}/", json={})
                            outcomes.append("sent")
                        except EgressRefused:
                            outcomes.append("refused")
            assert answers.queries >= 6
    assert outcomes == ["sent", "refused"] * 3
    assert allowed.connections == 3 and refused.connections == 0


async def test_a_name_with_one_refused_address_among_public_ones_is_refused() -> None:
    async with listening("127.0.0.2") as refused:
        with dns_server(["8.8.8.8", "127.0.0.2"]) as (nameserver, _):
            async with EgressGuard(resolver=Resolver(nameserver)) as guard:
                with pytest.raises(EgressRefused):
                    await guard.post(f"https://mixed.test:{refused.port}/", json={})
    assert refused.connections == 0


async def test_a_name_that_does_not_resolve_is_unreachable_within_its_own_timeout() -> None:
    # A name server that never answers: the resolve timeout ends the wait, well inside the call's.
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        nameserver = f"127.0.0.1:{silent.getsockname()[1]}"
        async with EgressGuard(resolver=Resolver(nameserver, timeout=0.3), deadline_seconds=30) as guard:
            with pytest.raises(EgressError) as lost:
                await asyncio.wait_for(guard.post("https://nowhere.test/", json={}), 10)
        assert lost.value.word == "unreachable"
    finally:
        silent.close()
