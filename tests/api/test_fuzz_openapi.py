"""Schemathesis against the live OpenAPI schema of the real app: every operation, with a
tenant key and with the admin key, valid and invalid input, a bounded number of examples
each. No response may be 5xx and every response must match its documented schema.

The API runs in this test's event loop (the `api_url` fixture), so the synchronous
schemathesis calls run in a thread. Path parameters are sometimes the test tenant's real
tenant, campaign and run, so generated requests reach past the 404s into the routes.
Run with `-s` to see the figures.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.tenants import MakeTenant

# Examples per operation, per generation mode (valid, invalid), per key.
EXAMPLES = 6
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
# Operations whose path parameters are never pointed at the test's real objects: the fuzz
# must not remove its own tenant or revoke its own keys.
KEEP_RANDOM = {("DELETE", "/v1/tenants/{tenant}")}
NEVER_REAL = {"key_id"}


@dataclass
class Figures:
    """What one fuzz pass did."""

    operations: int = 0
    examples: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def _fuzz_operation(
    operation: Any, api_url: str, session: requests.Session, token: str, pinned: dict[str, str], figures: Figures
) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(mode))
        if pinned:
            strategies.append(operation.as_strategy(mode, path_parameters=pinned))
    seen: set[str] = set()

    @hypothesis.given(case=st.one_of(strategies))
    @hypothesis.settings(
        max_examples=EXAMPLES * len(strategies),
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(base_url=api_url, session=session, headers=auth, timeout=70)
        figures.examples += 1
        figures.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except (Exception, BaseExceptionGroup) as exc:  # collect every failure; show the first of each kind
            kind = f"{operation.label} {response.status_code} {type(exc).__name__}"
            if kind not in seen:
                seen.add(kind)
                figures.failures.append(f"{kind}: {str(exc)[:600]}\n    {case.as_curl_command(headers=auth)}")

    run()


def _fuzz(api_url: str, token: str, real: dict[str, str], figures: Figures) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    # The Authorization header is ours: without this, a third of the negative cases are just
    # requests with no key (401), which test nothing the route-level tests do not.
    schema.config.generation.update(with_security_parameters=False)
    session = requests.Session()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operation = result.ok()
        figures.operations += 1
        names = set(re.findall(r"\{(\w+)\}", operation.path)) - NEVER_REAL
        random_only = (operation.method.upper(), operation.path) in KEEP_RANDOM
        pinned = {} if random_only else {name: real[name] for name in names & set(real)}
        _fuzz_operation(operation, api_url, session, token, pinned, figures)


@pytest.mark.slow
async def test_fuzz_every_operation_with_a_tenant_key_and_the_admin_key(
    make_tenant: MakeTenant, api_url: str, admin_key: str
) -> None:
    tenant = await make_tenant(customers=5)
    campaign = await tenant.http.post(
        tenant.url("/campaigns"),
        json={
            "name": "Fuzz",
            "segment": {},
            "channels": ["email"],
            "variants": [{"key": "A", "template": "weekly_deals"}],
        },
    )
    assert campaign.status_code == 201, campaign.text
    campaign_id = campaign.json()["id"]
    run = await tenant.http.post(tenant.url(f"/campaigns/{campaign_id}/runs"))
    assert run.status_code == 202, run.text
    real = {"tenant": tenant.slug, "campaign_id": campaign_id, "run_id": run.json()["run_id"]}

    started = time.monotonic()
    passes = {"tenant key": Figures(), "admin key": Figures()}
    await asyncio.to_thread(_fuzz, api_url, tenant.key, real, passes["tenant key"])
    await asyncio.to_thread(_fuzz, api_url, admin_key, real, passes["admin key"])
    elapsed = time.monotonic() - started
    # A schedule the fuzz may have set keeps starting runs; leave nothing recurring behind.
    removed = await tenant.http.delete(tenant.url(f"/campaigns/{campaign_id}/schedule"))
    assert removed.status_code in (204, 404), removed.text

    for name, figures in passes.items():
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(figures.statuses.items()))
        print(
            f"\nschemathesis {schemathesis.__version__}, {name}: {figures.operations} operations, "
            f"{figures.examples} examples, {figures.server_errors} responses 5xx, "
            f"{len(figures.failures)} failed checks; statuses {statuses}"
        )
    print(f"fuzzing took {elapsed:.1f} s")
    failures = [f for figures in passes.values() for f in figures.failures]
    assert not failures, "\n".join(failures)
    assert all(figures.operations > 0 and figures.server_errors == 0 for figures in passes.values())
