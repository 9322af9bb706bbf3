"""Triton killed under load: ``serve`` restarts it and the web page recovers by itself; the restart budget.

Attack 4 of RELIABILITY.md's table: SIGKILL of tritonserver while the web page is in use used to end
``serve`` within ~2 s and leave a /tmp/python_env_* folder behind.
"""

from __future__ import annotations

import glob
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from deepfake_edge.benchmarks.soak_service import ProcessInfo, ServeProcess
from deepfake_edge.server.supervisor import RestartBudgetExhausted, RestartPolicy, TritonSupervisor
from deepfake_edge.server.triton import PYTHON_ENV_GLOB, SHM_DIR, TritonServer, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]
RECOVERY_TARGET_S = 30.0


def _serve_of(service: ServeProcess) -> ProcessInfo:
    """The ``deepfake-edge serve`` process itself (pid and start time, so a restart cannot pass for it)."""
    (serve,) = [info for info in service.processes() if info.label == "serve (web app)"]
    return serve


def _triton_of(service: ServeProcess) -> psutil.Process:
    (triton,) = [info for info in service.processes() if info.label == "tritonserver"]  # serve's child
    return psutil.Process(triton.pid)


@pytest.mark.attack("4", "SIGKILL tritonserver while the web page is in use (serve used to exit; each crash "
                         "left an empty /tmp/python_env_*)")
def test_serve_restarts_a_killed_triton_and_the_web_page_recovers(demo_repository: Path, tmp_path: Path,
                                                                  record_property) -> None:
    from web_support import jpeg_bytes, post_file

    image = jpeg_bytes((320, 240))
    envs_before = set(glob.glob(PYTHON_ENV_GLOB))
    with ServeProcess(demo_repository / "embedded", tmp_path / "serve") as service:
        detect = f"{service.web_url}/api/detect"
        assert post_file(detect, "a.jpg", image)[0] == 200
        old, serve = _triton_of(service), _serve_of(service)
        old_regions = {p.name for p in SHM_DIR.glob(f"*dfe{serve.pid}_*")}
        old_envs = set(glob.glob(PYTHON_ENV_GLOB)) - envs_before
        stop, answers = threading.Event(), []

        def upload_until_stopped() -> None:
            while not stop.is_set():
                status, body = post_file(detect, "a.jpg", image, timeout_s=60)
                answers.append((time.monotonic(), status, body.get("error", "")))

        with ThreadPoolExecutor(max_workers=2) as pool:
            uploads = [pool.submit(upload_until_stopped) for _ in range(2)]
            time.sleep(1.0)
            killed_at = time.monotonic()
            os.kill(old.pid, signal.SIGKILL)
            deadline = killed_at + RECOVERY_TARGET_S + 30
            while time.monotonic() < deadline and not any(t > killed_at + 1 and s == 200 for t, s, _ in answers):
                time.sleep(0.2)
            stop.set()
            for upload in uploads:
                upload.result()
        recovered = min((t for t, s, _ in answers if t > killed_at + 1 and s == 200), default=None)
        assert recovered is not None, f"no detection after the kill: {answers[-5:]}\n{service.log_tail()}"
        recovery_s = recovered - killed_at
        assert recovery_s <= RECOVERY_TARGET_S, recovery_s
        statuses = {s for _, s, _ in answers}
        assert statuses <= {200, 503}, statuses
        assert any("restarting" in error for _, s, error in answers if s == 503), "503s must say it restarts"
        new = _triton_of(service)
        assert new.pid != old.pid and serve.alive() and _serve_of(service) == serve, "serve itself kept running"
        assert "tritonserver exited" in service.log_path.read_text()
        assert not old_regions & {p.name for p in SHM_DIR.glob(f"*dfe{serve.pid}_*")}
        assert not [folder for folder in old_envs if os.path.exists(folder)], "the dead server's folder stayed"
        leftovers = service.stop()
    assert leftovers == []
    assert set(glob.glob(PYTHON_ENV_GLOB)) <= envs_before
    record_property("outcome", f"serve restarted Triton; detections answered again {recovery_s:.1f} s after the "
                               f"kill (503 'restarting' meanwhile, no 5xx else); nothing left in /dev/shm or /tmp")


def test_a_server_that_keeps_dying_exhausts_the_restart_budget(tmp_path: Path) -> None:
    from test_server_launcher import write_tiny_repository

    repository = write_tiny_repository(tmp_path / "repo")
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    policy = RestartPolicy(max_restarts=1, window_s=600, first_backoff_s=0.1)
    supervisor = TritonSupervisor(lambda: TritonServer(repository, **ports), policy, poll_interval_s=0.05)
    outages: list[str | None] = []

    def kill_twice() -> None:
        for _ in range(2):
            deadline = time.monotonic() + 60
            server = supervisor.server
            while (server is None or not server.is_running()) and time.monotonic() < deadline:
                outages.append(supervisor.outage)
                time.sleep(0.01)
                server = supervisor.server
            os.kill(server.pid, signal.SIGKILL)
            while supervisor.server is server and time.monotonic() < deadline:
                time.sleep(0.01)

    with supervisor:
        killer = threading.Thread(target=kill_twice)
        killer.start()
        with pytest.raises(RestartBudgetExhausted, match="more than 1 restarts"):
            supervisor.watch()
        killer.join(timeout=60)
    assert any(outage and "restarting (attempt 1)" in outage for outage in outages)
    assert supervisor.outage and "too many crashes" in supervisor.outage
    assert len(supervisor.restarts) == 1
