"""The README's optimisation tour works as written: every curl of it, read from README.md, is sent
to the real API (its `$API` the test tenant's) in order, and each answer is what the tour says —
the winner-test-plus-fallback campaign saves, the send-time preview and the suggestions come
back, the run waits for its decision, is extended and picked, and records the pick."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import asyncpg

from tests.helpers.runs import wait_for_run
from tests.helpers.tenants import MakeTenant, Tenant
from tests.helpers.waiting import until

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "# Optimisation tour."


def tour_commands() -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path after $API, JSON body) of each curl in the README's optimisation tour."""
    text = README.read_text()
    start = text.index(MARKER)
    block = text[start : text.index("```", start)]
    code = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("#"))
    tokens = shlex.split(code.replace("\\\n", " "))
    commands: list[tuple[str, str, dict[str, Any] | None]] = []
    for token, value in zip(tokens, [*tokens[1:], ""], strict=True):
        if token == "curl":
            commands.append(("GET", "", None))
        elif not commands:
            continue
        method, url, body = commands[-1]
        if token == "-X":
            method = value
        elif token == "-d":
            body = json.loads(value)
        elif token.startswith("$API"):
            url = token.removeprefix("$API")
        commands[-1] = (method, url, body)
    return commands


async def _decide_at(tenant: Tenant, run_id: str) -> bool:
    body = (await tenant.http.get(tenant.url(f"/runs/{run_id}"))).json()
    return bool((body.get("experiment") or {}).get("decide_at"))


async def test_the_readme_optimisation_tour_works_as_written(make_tenant: MakeTenant, pool: asyncpg.Pool) -> None:
    commands = tour_commands()
    assert [m for m, _, _ in commands] == ["POST", "POST", "POST", "POST", "GET", "POST", "POST", "GET"], commands
    tenant = await make_tenant(customers=200)
    await pool.execute(
        """UPDATE customers SET loyalty_tier = CASE WHEN id % 2 = 0 THEN 'gold' ELSE 'none' END,
                                consent_email = true, email = coalesce(email, 't' || id || '@example.com')
           WHERE tenant_id = $1""",
        tenant.slug,
    )
    ids: dict[str, str] = {}
    answers: dict[str, Any] = {}
    for method, path, body in commands:
        for name, value in ids.items():
            path = path.replace(f"<{name}>", value)
        assert "<" not in path, path
        if path.endswith(":extend-test"):  # "while the test waits for its decision"
            await until(lambda: _decide_at(tenant, ids["run_id"]), within=60, what="the test to wait")
        response = await tenant.http.request(method, tenant.url(path), json=body)
        assert response.is_success, (method, path, response.status_code, response.text)
        answer = response.json()
        answers[path.rsplit("/", 1)[-1]] = answer
        if path == "/campaigns":
            ids["campaign_id"] = answer["id"]
        elif path.endswith("/runs"):
            ids["run_id"] = answer["run_id"]

    preview = answers[f"{ids['campaign_id']}:send-times"]
    assert preview["recipients"] == 100 and preview["optimised"] + preview["fallback"] == 100, preview
    suggestions = answers[f"{ids['campaign_id']}:suggest"]
    assert all(s["reason"] for s in suggestions["suggestions"]), suggestions

    async def decided() -> bool:
        body = (await tenant.http.get(tenant.url(f"/runs/{ids['run_id']}"))).json()
        return bool((body.get("experiment") or {}).get("decision"))

    await until(decided, within=60, what="the pick to be recorded")
    # The fallback waits a day from here: end the run rather than leave it waiting.
    cancelled = await tenant.http.post(tenant.url(f"/runs/{ids['run_id']}:cancel"))
    assert cancelled.status_code == 200, cancelled.text
    run = await wait_for_run(tenant, ids["run_id"])
    decision = run["experiment"]["decision"]
    assert (decision["winner"], decision["how"]) == ("B", "picked"), decision

    # The closing sentence: the same campaign with "send_time": "optimal" saves too.
    create = next(body for m, p, body in commands if p == "/campaigns")
    assert create is not None
    optimal = await tenant.http.post(tenant.url("/campaigns"), json={**create, "send_time": "optimal"})
    assert optimal.status_code == 201, optimal.text


def test_the_tour_is_found_in_the_readme() -> None:
    assert re.search(r"^# Optimisation tour\.", README.read_text(), re.M)
    assert len(tour_commands()) == 8
