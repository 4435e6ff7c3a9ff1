"""The provider simulator keeps a bounded window of messages while its counts stay exact."""

from __future__ import annotations

import httpx

from devstack.provider_simulator import SimState, create_app

WINDOW = 5


def _push(keys: list[str]) -> dict[str, object]:
    return {"messages": [{"token": f"token-{k:0>16}", "title": "t", "body": "b", "idempotency_key": k} for k in keys]}


async def test_messages_are_a_window_and_counts_stay_exact() -> None:
    state = SimState(message_window=WINDOW)
    transport = httpx.ASGITransport(app=create_app(state))
    auth = {"Authorization": "Bearer server-key"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
        first = [f"t:run-1:{i}:push" for i in range(12)]
        answer = (await http.post("/push/v1/batch", json=_push(first), headers=auth)).json()
        ids = {r["idempotency_key"]: r["message_id"] for r in answer["results"]}
        # A repeat of the whole batch: every key's first answer (kept or rebuilt), nothing delivered again.
        again = (await http.post("/push/v1/batch", json=_push(first), headers=auth)).json()
        assert {r["idempotency_key"]: r["message_id"] for r in again["results"]} == ids
        await http.post("/push/v1/batch", json=_push([f"t:run-2:{i}:push" for i in range(3)]), headers=auth)

        kept = (await http.get("/_sim/messages", params={"channel": "push"})).json()
        assert kept["count"] == WINDOW  # only the last WINDOW messages
        assert [m["idempotency_key"] for m in kept["messages"]][-3:] == [f"t:run-2:{i}:push" for i in range(3)]
        assert (await http.get("/_sim/keys", params={"contains": ":run-1:"})).json() == {
            "delivered": 12,
            "distinct": 12,
            "repeated": [],
        }
        assert (await http.get("/_sim/keys", params={"channel": "push"})).json()["delivered"] == 15
        stats = (await http.get("/_sim/stats")).json()
        assert stats["delivered"] == 15 and stats["duplicates"] == 12
    assert len(state.answers) == WINDOW  # accepted answers are a window too
