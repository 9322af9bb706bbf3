"""The protocol-independent part of the clients (client/analysis.py): how rows become requests, and the
clients' plans (retries, failure mapping, chunking) driven by a scripted transport, with no server."""

from __future__ import annotations

import pytest

from client_samples import photo
from deepfake_edge.client import analysis, endpoints
from deepfake_edge.client.analysis import MIN_ROWS_TO_SPLIT, request_slices
from deepfake_edge.client.errors import ModelNotReadyError, RequestTimeoutError, ServerError, ServerUnreachableError
from deepfake_edge.client.triton_io import Call, Compute, ModelInfo, Pause, Reconnect, Send, drive
from deepfake_edge.model_card import ModelCard


def info(instances: int, max_batch_size: int = 32) -> ModelInfo:
    return ModelInfo("m", ModelCard(arch="efficientnet_b0"), max_batch_size, (3, 224, 224), instances)


@pytest.mark.parametrize("rows, instances, max_batch, sizes", [
    (1, 2, 32, [1]),                       # a fast-mode image: one request
    (MIN_ROWS_TO_SPLIT - 1, 2, 32, [7]),   # too few rows to be worth two requests
    (26, 1, 32, [26]),                     # one instance (a GPU): one request of batch 26
    (26, 2, 32, [13, 13]),                 # two single-threaded CPU instances: both cores at once
    (25, 2, 32, [13, 12]),
    (70, 1, 32, [32, 32, 6]),              # beyond the batch limit: parts the batcher can merge
    (70, 2, 32, [32, 32, 6]),
    (40, 8, 32, [10, 10, 10, 10]),         # at most four parts
])
def test_rows_are_split_over_instances_within_the_batch_limit(rows, instances, max_batch, sizes):
    slices = request_slices(rows, info(instances, max_batch))
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == rows
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:])), "contiguous, in order"


# -- the plans, driven by a scripted transport: no server, no waiting ---------------------------------------


def settings(retries: int = 2, admin_key: str | None = None) -> endpoints.ClientSettings:
    return endpoints.ClientSettings("127.0.0.1:1", "grpc", "m", 5.0, retries, 10_000_000, admin_key)


def run(plan, answers: dict):
    """Drive ``plan``; ``answers`` maps a Call's method (or the Send class) to its answer (an exception is
    raised). Returns the plan's result (or its exception) and the steps it asked for."""
    steps = []

    def perform(step):
        steps.append(step)
        if isinstance(step, Compute):
            return step.function(*step.args)
        key = step.method if isinstance(step, Call) else type(step)
        answer = answers.get(key)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    try:
        return drive(plan, perform), steps
    except Exception as error:
        return error, steps


def kinds(steps) -> list:
    return [step.method if isinstance(step, Call) else type(step).__name__ for step in steps]


def test_connection_failures_are_retried_with_back_off_then_reported():
    result, steps = run(analysis.model_info(settings(retries=2)), {"is_server_live": ConnectionRefusedError()})
    assert isinstance(result, ServerUnreachableError) and "127.0.0.1:1" in str(result)
    assert kinds(steps) == ["is_server_live", "Reconnect", "Pause"] * 2 + ["is_server_live", "Reconnect"]
    assert [step.seconds for step in steps if isinstance(step, Pause)] == [0.25, 0.5]


def test_a_timeout_is_not_retried():
    result, steps = run(analysis.model_info(settings(retries=2)), {"is_server_live": TimeoutError()})
    assert isinstance(result, RequestTimeoutError)
    assert kinds(steps) == ["is_server_live", "Reconnect"]


def test_a_programming_error_surfaces_unchanged():
    result, _ = run(analysis.model_info(settings()), {"is_server_live": KeyError("bug")})
    assert type(result) is KeyError


@pytest.mark.parametrize("admin_key", [None, "secret"])
def test_a_model_that_is_not_ready_is_named_with_the_servers_models_where_the_key_allows(admin_key):
    answers = {"is_server_live": True, "is_model_ready": False,
               "get_model_repository_index": {"models": [{"name": "other", "state": "READY"}]}}
    result, steps = run(analysis.model_info(settings(admin_key=admin_key)), answers)
    assert isinstance(result, ModelNotReadyError) and "'m'" in str(result)
    asked_index = "get_model_repository_index" in kinds(steps)
    assert asked_index == (admin_key is not None) and ("other (READY)" in str(result)) == asked_index
    assert not any(isinstance(step, (Pause, Reconnect)) for step in steps), "not ready is not retried"


def test_once_the_server_is_unreachable_later_chunks_fail_without_being_sent():
    client, image = settings(retries=0), photo().resize((64, 48))
    chunk_plans = analysis.chunk_plans(client, info(1), [image, b"broken", image, image], 2, False, 2, "fast")
    results, sends = [], 0
    for plan in chunk_plans:
        if plan is not None:
            chunk_results, steps = run(plan, {Send: ConnectionRefusedError()})
            results += chunk_results
            sends += kinds(steps).count("Send")
    assert sends == 1, "the second chunk must not be sent"
    assert [type(r.error).__name__ for r in results] == ["ServerUnreachableError", "BadImageError",
                                                         "ServerUnreachableError", "ServerUnreachableError"]
    assert results[0].error is results[2].error


def schedule(info_or_error, count: int, most_started: int, batch_size: int) -> list[str]:
    """What chunk_plans asks a transport to do, and how many sources it had read by each start."""
    pulled = []

    def sources():
        for index in range(count):
            pulled.append(index)
            yield index

    return ["wait" if plan is None else f"start after {len(pulled)}"
            for plan in analysis.chunk_plans(settings(), info_or_error, sources(), most_started, False,
                                             batch_size, "fast")]


def test_chunks_are_cut_lazily_and_started_at_most_so_many_ahead():
    assert schedule(info(1), 7, most_started=2, batch_size=2) == [
        "start after 2", "start after 4", "wait", "start after 6", "wait", "start after 7", "wait", "wait"]


def test_without_model_info_every_source_fails_with_its_error_unsent():
    error = ModelNotReadyError("down")
    plans = analysis.chunk_plans(settings(), error, range(11), 2, False, None, "fast")
    results = []
    for plan in plans:
        if plan is not None:
            chunk_results, steps = run(plan, {})
            assert steps == []
            results += chunk_results
    assert [r.source for r in results] == list(range(11)) and all(r.error is error for r in results)
    assert schedule(error, 11, most_started=2, batch_size=2) == ["start after 8", "start after 11", "wait", "wait"]


# -- failover between several endpoints (the same plans, the endpoint pinned by Reconnect steps) ---------------


def run_on(plan, alive: set[str], first: str):
    """Drive ``plan`` against endpoints of which only ``alive`` answer (``is_server_live`` True, a model that
    is ready, a config); returns its result (or exception), the steps, and the endpoint of each call."""
    steps, called, target = [], [], [first]

    def perform(step):
        steps.append(step)
        if isinstance(step, Reconnect):
            target[0] = step.url or target[0]
            return None
        if isinstance(step, Pause):
            return None
        called.append(target[0])
        if target[0] not in alive:
            raise ConnectionRefusedError(111, "Connection refused")
        return {"is_server_live": True, "is_model_ready": True}.get(step.method, {})

    try:
        return drive(plan, perform), steps, called
    except Exception as error:
        return error, steps, called


def two_endpoints(retries: int = 2) -> endpoints.ClientSettings:
    return endpoints.ClientSettings(["127.0.0.1:1", "127.0.0.1:2"], "grpc", "m", 5.0, retries, 10_000_000, None)


def test_a_dead_first_endpoint_fails_over_to_the_next_at_once_and_the_client_stays_there():
    client = two_endpoints()
    result, steps, called = run_on(endpoints.retried(client, lambda: (yield Call("is_server_live"))),
                                   alive={"127.0.0.1:2"}, first=client.url)
    assert result is True and called == ["127.0.0.1:1", "127.0.0.1:2"]
    assert kinds(steps) == ["Reconnect", "is_server_live", "Reconnect", "is_server_live"], "no back-off"
    assert steps[0] == Reconnect("127.0.0.1:1", broken=False) and steps[2] == Reconnect("127.0.0.1:2")
    assert client.url == "127.0.0.1:2", "later requests start on the endpoint that answered"
    _, _, called = run_on(endpoints.retried(client, lambda: (yield Call("is_server_live"))),
                          alive={"127.0.0.1:2"}, first="127.0.0.1:1")
    assert called == ["127.0.0.1:2"]


def test_when_every_endpoint_is_dead_the_error_names_them_all_after_each_was_tried():
    result, steps, called = run_on(analysis.model_info(two_endpoints(retries=2)), alive=set(), first="127.0.0.1:1")
    assert isinstance(result, ServerUnreachableError)
    assert "127.0.0.1:1 or 127.0.0.1:2" in str(result) and "Connection refused" in str(result)
    assert called == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1"], "retries=2: three attempts in a ring"
    assert [step.seconds for step in steps if isinstance(step, Pause)] == [0.5], "back-off only when wrapping"


def test_every_endpoint_is_tried_even_with_fewer_retries():
    result, _, called = run_on(analysis.model_info(two_endpoints(retries=0)), alive={"127.0.0.1:2"},
                               first="127.0.0.1:1")
    assert called == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:2", "127.0.0.1:2"]  # live, ready, config
    assert isinstance(result, ServerError), "the scripted config is empty: answered, not unreachable"


def test_concurrent_failures_on_one_endpoint_move_the_client_once():
    client = endpoints.ClientSettings(["a:1", "b:1", "c:1"], "grpc", "m", 5.0, 2, 10_000_000, None)
    assert [client.fail_over("a:1") for _ in range(3)] == ["b:1"] * 3
    assert client.url == "b:1", "not c:1: the other failures were on a:1, which the client had already left"
    assert endpoints.ClientSettings(["a:1", "a:1", "http://b:1/"], "grpc", "m", 5.0, 2, 1, None).urls == ("a:1", "b:1")
