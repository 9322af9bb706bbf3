"""``serve --replicas``: two real tritonservers behind real HAProxy (and nginx), a replica SIGKILLed under load.

Everything runs on 127.0.0.1 with bounded waits. The replica set is the small CNN (these tests are about
routing and failover; it starts in seconds), loaded at concurrency 16 through the balancer with the
project's own client over gRPC and HTTP; one replica is killed mid-load each time and restarted after.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from client_samples import photo
from deepfake_edge.client import DeepfakeClient, Detection, Failure, ServerUnreachableError
from deepfake_edge.server.admin_key import admin_headers
from deepfake_edge.server.load_balancer import GRPC_BACKEND, HTTP_BACKEND, WORKDIR_PREFIX
from deepfake_edge.server.replicas import GATEWAY_PREFIX, ReplicaSet
from deepfake_edge.server.triton import SHM_DIR, SHM_STEM, free_port, remove_stale_workdirs

pytestmark = pytest.mark.server

MODEL = "deepfake_cnn"
CONCURRENCY = 16
REQUESTS = 800
KILL_AFTER = 150  # results received before one replica is SIGKILLed
SCORE_TOLERANCE = 1e-5
NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field", "retina", "immunohistochemistry")


@pytest.fixture(scope="module")
def repository(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("replica_repository")
    shutil.copytree(demo_repository / "embedded" / MODEL, folder / MODEL)
    return folder


@pytest.fixture(scope="module")
def replicas(repository: Path):
    """Two replicas behind HAProxy, nginx on the public HTTP port; everything they leave is checked in
    :func:`test_stop_leaves_no_process_region_or_folder`, the last test."""
    replica_set = ReplicaSet(repository, 2, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                             startup_timeout_s=180)
    replica_set.start()
    replica_set.seen_servers = list(replica_set.servers)  # type: ignore[attr-defined] # every server, killed ones too
    try:
        yield replica_set
    finally:
        replica_set.stop()


@pytest.fixture(scope="module")
def sources() -> list[bytes]:
    encoded = []
    for name in NAMES:
        buffer = io.BytesIO()
        photo(name).convert("RGB").save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def reference_scores(replica_set: ReplicaSet, sources: list[bytes]) -> list[float]:
    """Each photo's score from one replica alone, straight to its own gRPC port."""
    with DeepfakeClient(replica_set.servers[0].grpc_url, model=MODEL, provenance=False) as client:
        return [client.detect(source, mode="fast").fake_probability for source in sources]


@pytest.mark.attack("E10", "use Triton's admin APIs (repository index, statistics) anonymously through the HAProxy of serve --replicas 2, over HTTP and gRPC")
def test_admin_apis_still_need_the_key_through_the_balancer(replicas: ReplicaSet, record_property) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    index = f"http://{replicas.http_url}/v2/repository/index"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(index, data=b"{}", method="POST"), timeout=10)
    assert refused.value.code == 403
    keyed = urllib.request.Request(index, data=b"{}", method="POST", headers=admin_headers(replicas.admin_key))
    with urllib.request.urlopen(keyed, timeout=10) as answer:
        assert answer.status == 200
    client = grpcclient.InferenceServerClient(replicas.grpc_url)
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="restricted"):
        client.get_inference_statistics(MODEL)
    assert client.get_model_repository_index(headers=admin_headers(replicas.admin_key, "grpc")).models
    record_property("outcome", "HTTP 403 and gRPC 'restricted' without the key; answered with it")
    client.close()
    # HAProxy's own control is a socket only this user can open, in a folder only this user can enter; its
    # metrics port serves metrics and nothing else.
    assert replicas.balancer is not None and replicas.balancer.stats_socket is not None
    assert stat.S_IMODE(replicas.balancer.stats_socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(replicas.balancer.stats_socket.parent.stat().st_mode) == 0o700
    with pytest.raises(urllib.error.HTTPError) as not_here:
        urllib.request.urlopen(f"http://127.0.0.1:{replicas.metrics_port}/v2/repository/index", timeout=10)
    assert not_here.value.code == 404
    with urllib.request.urlopen(replicas.metrics_url, timeout=10) as metrics:
        assert "haproxy_server_status" in metrics.read().decode()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_replica_killed_under_load_loses_no_result_and_is_routed_around(
        replicas: ReplicaSet, sources: list[bytes], protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    balancer = replicas.balancer
    assert balancer is not None
    balancer.wait_for_states({"r0": "UP", "r1": "UP"}, timeout_s=30)
    reference = reference_scores(replicas, sources)
    victim = replicas.slots[1].server
    assert victim is not None and victim.pid is not None
    victim_pid, backend = victim.pid, GRPC_BACKEND if protocol == "grpc" else HTTP_BACKEND
    caplog.set_level(logging.DEBUG, logger="deepfake_edge.client.endpoints")
    url = replicas.grpc_url if protocol == "grpc" else replicas.http_url
    results: list = []
    down_at, victim_sessions_when_down = None, None
    started = time.monotonic()
    with DeepfakeClient(url, protocol=protocol, model=MODEL, provenance=False, timeout_s=30) as client:
        load = [sources[i % len(sources)] for i in range(REQUESTS)]
        for result in client.iter_detect(load, concurrency=CONCURRENCY, batch_size=1, mode="fast"):
            results.append(result)
            if len(results) == KILL_AFTER:
                os.kill(victim_pid, signal.SIGKILL)
            if len(results) > KILL_AFTER and down_at is None and len(results) % 10 == 0:
                row = balancer.server_stats(backend)["r1"]
                if row["status"] == "DOWN":
                    down_at, victim_sessions_when_down = len(results), int(row["stot"])
    elapsed = time.monotonic() - started
    if down_at is None:  # the load ended first: HAProxy must still notice, within its check interval
        balancer.wait_for_states({"r1": "DOWN"}, timeout_s=10)
    after = balancer.server_stats(backend)

    # 0 results lost: one per request, in order; none misreported: every Detection carries the score one
    # replica alone gives; every Failure says why. Nothing reported as a success without a score.
    assert len(results) == REQUESTS
    detections = [r for r in results if isinstance(r, Detection)]
    failures = [r for r in results if isinstance(r, Failure)]
    assert len(detections) + len(failures) == REQUESTS
    for index, result in enumerate(results):
        if isinstance(result, Detection):
            assert math.isfinite(result.fake_probability) and result.label in ("Real", "Fake")
            assert abs(result.fake_probability - reference[index % len(sources)]) <= SCORE_TOLERANCE, index
        else:
            assert isinstance(result.error, ServerUnreachableError) and result.reason, result
    assert not failures, f"{len(failures)} requests failed although one replica stayed up: {failures[0].reason}"

    # The balancer stopped routing to the dead replica: DOWN in its stats and its log, no session after.
    assert after["r1"]["status"] == "DOWN"
    if victim_sessions_when_down is not None:
        assert int(after["r1"]["stot"]) == victim_sessions_when_down, "sessions went to a DOWN replica"
    haproxy_log = balancer.log_tail(400)
    assert re.search(rf"Server {HTTP_BACKEND}/r1 is DOWN", haproxy_log)
    assert f"{GRPC_BACKEND}/r1 is DOWN via {HTTP_BACKEND}/r1" in haproxy_log

    # What failed was retried: by the client (each retry is logged) or, for connections never opened, by
    # HAProxy itself (a "+N" redispatch in its log). Every error HAProxy answered was retried by the client.
    client_retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cannot reach")]
    redispatched = int(after["r0"]["wredis"]) + int(after["r1"]["wredis"])
    error_answers = len(re.findall(r" (?:502|503) \d+ - - ", haproxy_log)) + len(re.findall(r" -1 \d+ - - S", haproxy_log))
    assert client_retries or redispatched, "the kill hit no request in flight: nothing proves failover"
    assert len(client_retries) >= error_answers, (client_retries, haproxy_log)
    print(f"{protocol}: {REQUESTS} requests in {elapsed:.1f} s, replica r1 DOWN after "
          f"{down_at or 'the end of the'} results, client retries {len(client_retries)}, HAProxy redispatches "
          f"{redispatched}, HAProxy error answers {error_answers}")

    # The dead replica is restarted on its ports and HAProxy routes to it again.
    deadline = time.monotonic() + 120
    while replicas.slots[1].server is None or not replicas.slots[1].server.is_running():
        assert time.monotonic() < deadline, "replica r1 was not restarted"
        replicas.check()
        time.sleep(0.2)
    replicas.seen_servers.append(replicas.slots[1].server)  # type: ignore[attr-defined]
    balancer.wait_for_states({"r0": "UP", "r1": "UP"}, timeout_s=30)
    try:
        assert not _alive(psutil.Process(victim_pid)), "the killed replica's tritonserver is still running"
    except psutil.NoSuchProcess:
        pass  # already reaped


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie; a process that exits between the two questions is not alive."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_serve_replicas_verb_serves_through_haproxy_and_stops_cleanly(repository: Path, sources: list[bytes]) -> None:
    from test_server_commands import CLI, READY_LINE, LineReader

    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = CLI + ["serve", "--replicas", "2", "--no-web", "--model-repository", str(repository),
                     "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    serve = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        output = LineReader(serve.stdout)
        ready = output.wait_for("Triton Inference Server ready: 2 replicas behind HAProxy", 240)
        pids = [int(pid) for pid in re.search(r"pids (\d+(?:, \d+)*)", ready).group(1).split(", ")]
        haproxy_pid = int(re.search(r"pid (\d+)", output.wait_for("HAProxy: pid", 30)).group(1))
        output.wait_for(READY_LINE, 30)
        family = [psutil.Process(haproxy_pid)]
        for pid in pids:
            family += [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=10) as health:
            assert health.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as metrics:
            assert 'haproxy_server_status{proxy="triton_grpc",server="r1",state="UP"} 1' in metrics.read().decode()
        with DeepfakeClient(f"127.0.0.1:{grpc_port}", model=MODEL, provenance=False) as client:
            assert all(r.ok for r in client.detect_many(sources, concurrency=4, batch_size=1, mode="fast"))
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    assert "stopped" in output.rest()
    assert not [p for p in family if _alive(p)]
    assert not list(SHM_DIR.glob(f"{SHM_STEM}dfe{serve.pid}_*"))
    assert not list(Path(tempfile.gettempdir()).glob(f"deepfake-edge-*-{serve.pid}-*"))


_BALANCER_SCRIPT = """
import time
from deepfake_edge.server.load_balancer import LoadBalancer, Replica
from deepfake_edge.server.triton import free_port
balancer = LoadBalancer([Replica("r0", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")],
                        http_port=free_port(), grpc_port=free_port()).start()
print(balancer.pid, flush=True)
time.sleep(120)
"""


def test_haproxy_does_not_outlive_a_launcher_that_is_killed() -> None:
    # Started as root, HAProxy's worker runs as nobody, and a change of user clears the kernel's parent-death
    # signal: only its master (this user) gets it. Both must still go when the launcher is SIGKILLed.
    import sys

    launcher = subprocess.Popen([sys.executable, "-c", _BALANCER_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        master = psutil.Process(int(launcher.stdout.readline()))
        family = [master, *master.children(recursive=True)]
        assert len(family) >= 2, "a master and its worker"
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout.close()
    deadline = time.monotonic() + 10
    while [p for p in family if _alive(p)]:
        assert time.monotonic() < deadline, f"haproxy outlived its killed launcher: {family}"
        time.sleep(0.1)
    # Nobody was left to remove its folder: the next start does.
    assert [name for name in remove_stale_workdirs(WORKDIR_PREFIX) if f"-{launcher.pid}-" in name]


def test_stop_leaves_no_process_region_or_folder(replicas: ReplicaSet) -> None:
    balancer, gateway = replicas.balancer, replicas.gateway
    assert balancer is not None and gateway is not None
    processes = [psutil.Process(balancer.pid), psutil.Process(gateway._process.pid)]  # type: ignore[union-attr]
    for server in replicas.servers:
        processes += [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    prefixes = [server.shm_prefix for server in replicas.seen_servers]  # type: ignore[attr-defined]
    folders = [balancer.workdir, Path(replicas._gateway_dir.name)]  # type: ignore[union-attr]
    folders += [Path(server._workdir.name) for server in replicas.servers]  # type: ignore[union-attr]
    replicas.stop()
    assert not [p for p in processes if _alive(p)]
    assert prefixes and not [path for prefix in prefixes for path in SHM_DIR.glob(f"{prefix}*")]
    assert not [folder for folder in folders if folder is not None and folder.exists()]
    for prefix in (WORKDIR_PREFIX, GATEWAY_PREFIX):
        assert not list(Path(tempfile.gettempdir()).glob(f"{prefix}{os.getpid()}-*"))
    assert "r1 is DOWN" in balancer.log, "the log's tail outlives its folder"
