"""The web app's one shared client per model: reused by every request, replaced after a server-side failure."""

from __future__ import annotations

import threading

import pytest

from deepfake_edge.client import BadImageError, ModelNotReadyError, RequestTimeoutError, ServerUnreachableError
from deepfake_edge.webapp import inference


class FakeClient:
    made: list["FakeClient"] = []

    def __init__(self, **kwargs):
        self.closed = threading.Event()
        FakeClient.made.append(self)

    def close(self):
        self.closed.set()


@pytest.fixture
def shared(monkeypatch):
    FakeClient.made = []
    monkeypatch.setattr(inference, "DeepfakeClient", FakeClient)
    monkeypatch.setattr(inference, "_MIN_CLIENT_AGE_S", 0.0)
    return inference._SharedClient("127.0.0.1:1", "grpc", "deepfake_b0", 1.0)


def _fail_with(shared, error):
    with pytest.raises(type(error)):
        with shared.use():
            raise error


def test_one_client_is_created_lazily_and_shared(shared):
    assert FakeClient.made == []  # nothing built (nor contacted) before the first request
    with shared.use() as first, shared.use() as second:
        assert first is second
    with shared.use() as again:
        assert again is first
    assert len(FakeClient.made) == 1 and not first.closed.is_set()


@pytest.mark.parametrize("error", [RequestTimeoutError("u", 1.0), BadImageError("not an image")])
def test_a_timeout_or_a_bad_image_keeps_the_client(shared, error):
    with shared.use() as client:
        pass
    _fail_with(shared, error)
    with shared.use() as again:
        assert again is client and not client.closed.is_set()


@pytest.mark.parametrize("error", [ServerUnreachableError("u", "refused"), ModelNotReadyError("reloading")])
def test_a_server_failure_replaces_the_client_once_its_calls_return(shared, error):
    with shared.use() as old:
        _fail_with(shared, error)  # another request fails while this one still uses the client
        assert not old.closed.is_set()
        with shared.use() as new:
            assert new is not old
    assert old.closed.wait(5.0)  # closed (on a thread of its own) once its last call returned
    with shared.use() as current:
        assert current is new and not new.closed.is_set()


def test_replacements_are_rate_limited(shared, monkeypatch):
    monkeypatch.setattr(inference, "_MIN_CLIENT_AGE_S", 60.0)
    _fail_with(shared, ServerUnreachableError("u", "refused"))
    _fail_with(shared, ServerUnreachableError("u", "refused"))
    assert len(FakeClient.made) == 1  # a failing server does not get a new client per request


def test_concurrent_failures_replace_the_client_once(shared):
    with shared.use():
        pass
    barrier = threading.Barrier(8)

    def fail():
        try:
            with shared.use():
                barrier.wait(timeout=30)  # all eight hold the same client before any of them fails
                raise ServerUnreachableError("u", "refused")
        except ServerUnreachableError:
            pass

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with shared.use():
        pass
    assert len(FakeClient.made) == 2
