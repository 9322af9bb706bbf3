"""The web app caps glibc's malloc arenas (its RSS drifted under 16 concurrent uploads without a cap)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter: arenas, once created, live as long as the process.
ARENA_PROBE = textwrap.dedent("""
    import ctypes, sys, threading
    from deepfake_edge.webapp.glibc_memory import limit_malloc_arenas

    print(limit_malloc_arenas() if sys.argv[1] == "cap" else None)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    start = threading.Barrier(16)

    def allocate():
        start.wait()  # all 16 threads allocate at once, as 16 concurrent uploads do
        for _ in range(200):
            libc.free(libc.malloc(4096))

    threads = [threading.Thread(target=allocate) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text, size = ctypes.c_char_p(), ctypes.c_size_t()
    libc.open_memstream.restype = ctypes.c_void_p
    stream = libc.open_memstream(ctypes.byref(text), ctypes.byref(size))
    libc.malloc_info.argtypes, libc.fclose.argtypes = [ctypes.c_int, ctypes.c_void_p], [ctypes.c_void_p]
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(ctypes.string_at(text, size.value).decode().count("<heap nr="))
""")


def _arenas(mode: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    lines = subprocess.run([sys.executable, "-c", ARENA_PROBE, mode], env=env, capture_output=True, text=True,
                           timeout=60, check=True).stdout.split()
    return lines[0], int(lines[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc arenas")
def test_sixteen_threads_share_two_arenas_once_capped():
    capped, uncapped = _arenas("cap"), _arenas("none")
    assert capped[0] == "True" and capped[1] <= 2
    assert uncapped[0] == "None" and uncapped[1] > 2  # glibc's default: up to 8 per core


def test_an_explicit_malloc_arena_max_wins(monkeypatch):
    from deepfake_edge.webapp.glibc_memory import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
