"""Fleet (the blocking client) against a real fleetd: calls, typed errors, wire types in step."""
from __future__ import annotations

import inspect
from typing import get_type_hints

import pytest

import fleetd
from fleetd import AsyncFleet, Fleet
from fleetd.client import SUBMIT_OPTIONS

from .conftest import Server, api


@pytest.fixture
def fleet(server: Server):
    with Fleet(server.url, api_key=server.key) as client:
        yield client


def schema_of(document: dict, ref_or_schema: dict) -> dict:
    if "$ref" in ref_or_schema:
        name = ref_or_schema["$ref"].rsplit("/", 1)[-1]
        return document["components"]["schemas"][name]
    return ref_or_schema


class TestWireTypes:
    """The TypedDicts are generated from the server's schemas; these check them against /openapi.json."""

    @pytest.fixture(scope="class")
    def openapi(self, server: Server) -> dict:
        return api(server).get("/openapi.json").json()

    def test_task_has_every_field_of_the_api(self, openapi: dict) -> None:
        schema = schema_of(openapi, openapi["paths"]["/v1/tasks/{id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"])
        assert set(get_type_hints(fleetd.Task)) == set(schema["properties"])

    def test_task_input_and_submit_keywords_cover_the_api(self, openapi: dict) -> None:
        body = openapi["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        schema = schema_of(openapi, body)
        # A client names its namespace once (namespace=, sent as the Fleetd-Namespace header), not per task.
        fields = set(schema["properties"]) - {"namespace"}
        assert set(get_type_hints(fleetd.TaskInput)) == fields
        assert fleetd.TaskInput.__required_keys__ == frozenset(schema["required"])
        assert set(SUBMIT_OPTIONS.values()) == fields - {"type", "payload"}
        for submit in (Fleet.submit, AsyncFleet.submit):
            assert set(inspect.signature(submit).parameters) - {"self", "type", "payload"} == set(SUBMIT_OPTIONS)

    def test_agent_has_every_field_of_the_api(self, openapi: dict) -> None:
        answer = openapi["paths"]["/v1/agents"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
        agent = schema_of(openapi, schema_of(openapi, answer)["properties"]["agent"])
        assert set(get_type_hints(fleetd.AgentJson)) == set(agent["properties"])


class TestSubmitters:
    def test_submit_get_list_cancel_and_stats(self, fleet: Fleet) -> None:
        task = fleet.submit("py-api", {"n": 1}, priority=5, max_attempts=2, delay_ms=60_000)
        assert task["status"] == "scheduled" and task["priority"] == 5 and task["maxAttempts"] == 2
        assert task["idempotencyKey"].startswith("sdk-")
        assert fleet.get(task["id"]) == fleet.get(task["id"])
        page = fleet.list(type="py-api", status="scheduled", limit=10)
        assert [t["id"] for t in page.items] == [task["id"]] and page.next_cursor is None
        assert fleet.cancel(task["id"])["status"] == "cancelled"
        assert isinstance(fleet.stats(), dict)

    def test_an_idempotency_key_makes_a_repeat_the_same_task(self, fleet: Fleet) -> None:
        first = fleet.submit("py-idem", idempotency_key="py-once")
        again = fleet.submit("py-idem", idempotency_key="py-once")
        assert again["id"] == first["id"]

    def test_submit_batch_is_all_or_nothing(self, fleet: Fleet) -> None:
        tasks = fleet.submit_batch([{"type": "py-batch", "payload": i} for i in range(3)])
        assert [t["payload"] for t in tasks] == [0, 1, 2]
        with pytest.raises(fleetd.ValidationError) as refused:
            fleet.submit_batch([{"type": "py-batch-2"}, {"type": "py-batch-2", "priority": "high"}])  # type: ignore[typeddict-item]
        assert refused.value.status == 400 and refused.value.code == "FLEETD_ERR_VALIDATION"
        assert fleet.list(type="py-batch-2").items == []

    def test_submit_batch_minimal_answers_without_the_payloads(self, fleet: Fleet) -> None:
        prompt = "p" * 20_000
        tasks = fleet.submit_batch([{"type": "py-minimal", "payload": {"prompt": prompt}}] * 2, minimal=True)
        assert [(t["type"], t["status"], "payload" in t) for t in tasks] == [("py-minimal", "queued", False)] * 2
        assert [fleet.get(t["id"])["payload"] for t in tasks] == [{"prompt": prompt}] * 2
        assert fleet.submit_batch([{"type": "py-minimal", "payload": {"prompt": prompt}}])[0]["payload"] == {"prompt": prompt}


class TestTypedErrors:
    """The bad inputs the TypeScript SDK's tests send, raised here as typed exceptions with the same codes."""

    def test_an_invalid_task_is_a_validation_error(self, fleet: Fleet) -> None:
        with pytest.raises(fleetd.ValidationError) as refused:
            fleet.submit("not a type name")
        assert (refused.value.status, refused.value.code, refused.value.details["field"]) == (400, "FLEETD_ERR_VALIDATION", "body.type")

    def test_an_unknown_keyword_is_refused_before_sending(self, fleet: Fleet) -> None:
        with pytest.raises(TypeError):
            fleet.submit("py-x", colour="red")  # type: ignore[call-arg]

    def test_a_missing_task_is_not_found(self, fleet: Fleet) -> None:
        with pytest.raises(fleetd.NotFoundError) as missing:
            fleet.get(987_654_321)
        assert (missing.value.status, missing.value.code) == (404, "FLEETD_ERR_NOT_FOUND")

    def test_cancelling_a_finished_task_is_a_conflict(self, fleet: Fleet) -> None:
        task = fleet.submit("py-twice", delay_ms=60_000)
        fleet.cancel(task["id"])
        with pytest.raises(fleetd.ConflictError) as conflict:
            fleet.cancel(task["id"])
        assert (conflict.value.status, conflict.value.code) == (409, "FLEETD_ERR_TASK_STATE")

    def test_a_wrong_key_is_unauthorized(self, server: Server) -> None:
        with Fleet(server.url, api_key="fk_wrong") as stranger, pytest.raises(fleetd.UnauthorizedError) as refused:
            stranger.stats()
        assert refused.value.code == "FLEETD_ERR_UNAUTHORIZED"

    def test_a_payload_over_the_limit_is_too_large(self, fleet: Fleet) -> None:
        with pytest.raises(fleetd.PayloadTooLargeError) as refused:
            fleet.submit("py-big", "x" * (2 * 1024 * 1024))
        assert refused.value.status == 413

    def test_an_error_over_a_socket_gets_the_catalogue_status_of_its_code(self) -> None:
        err = fleetd.FleetApiError.from_wire({"code": "FLEETD_ERR_NOT_FOUND", "message": "task 1 does not exist", "details": {}})
        assert isinstance(err, fleetd.NotFoundError) and err.status == 404
        assert all(fleetd.FleetApiError.from_wire({"code": code, "message": ""}).status == status for code, status in fleetd.ERROR_STATUS.items())


class TestSeveralNodes:
    def test_requests_move_on_from_a_node_that_refuses_connections(self, server: Server) -> None:
        with Fleet(urls=["http://127.0.0.1:9", server.url], api_key=server.key) as fleet:
            task = fleet.submit("py-failover", delay_ms=60_000)
            assert fleet.get(task["id"])["id"] == task["id"]
            assert fleet._async.url == server.url


class TestBlockingSubscribe:
    def test_a_subscription_is_an_iterator_of_events(self, fleet: Fleet) -> None:
        subscription = fleet.subscribe(["queue:py-sync-events"])
        task = fleet.submit("py-sync-events", delay_ms=60_000)
        event = next(subscription)
        assert (event.name, event.topic, event.data["task"]["id"]) == ("task.created", "queue:py-sync-events", task["id"])
        subscription.close()
        assert list(subscription) == []
