"""The naive serving design the seed projects use, as a real server to benchmark against.

Flask's own threaded server, one HTTP request -> decode + preprocess -> one forward pass, no batching.
``--engine torch`` runs the checkpoint in PyTorch eager (the seed projects' design; torch's default
thread count, as they leave it); ``--engine onnxruntime`` runs an exported ONNX file without batching
(the usual hand-rolled alternative), with the same session options as our server's model.

    python -m deepfake_edge.benchmarks.naive_server --checkpoint CKPT --port 5000 [--engine onnxruntime --onnx F]

``POST /predict`` with the image file as the request body answers
``{"label", "confidence", "fake_probability", "logit"}``; ``GET /health`` answers once the model is
loaded. :class:`NaiveServer` starts it as a subprocess on a loopback port and always stops it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path

from deepfake_edge.server.processes import ChildProcess

_READY_TIMEOUT_S = 120.0


def create_app(checkpoint: str | Path, engine: str = "torch", onnx_path: str | Path | None = None):
    """A Flask app answering ``/predict`` with one forward pass per request."""
    import numpy as np
    from flask import Flask, jsonify, request

    from deepfake_edge.checkpoint import load_checkpoint, read_card
    from deepfake_edge.preprocessing import BadImageError, Preprocessor

    card = read_card(checkpoint)
    preprocess = Preprocessor.from_card(card)
    if engine == "torch":
        import torch

        from deepfake_edge.benchmarks.engine import torch_runner

        model, card = load_checkpoint(checkpoint)
        run = torch_runner(model, card.mean, card.std)
        threads = torch.get_num_threads()

        def logit_of(batch: np.ndarray) -> float:
            return float(run(batch)[0, 0])
    elif engine == "onnxruntime":
        from deepfake_edge.benchmarks.engine import session_for
        from deepfake_edge.serving_contract import INPUT_NAME, LOGIT_OUTPUT

        threads = os.cpu_count() or 1
        session = session_for(onnx_path, threads)

        def logit_of(batch: np.ndarray) -> float:
            return float(session.run([LOGIT_OUTPUT], {INPUT_NAME: batch})[0].reshape(-1)[0])
    else:
        raise ValueError(f"unknown engine {engine!r} (torch or onnxruntime)")

    app = Flask("naive_server")

    @app.get("/health")
    def health():
        return jsonify(status="ready", engine=engine, threads=threads, arch=card.arch)

    @app.post("/predict")
    def predict():
        try:
            tensor = preprocess(request.get_data())
        except BadImageError as error:
            return jsonify(error=str(error)), 400
        logit = logit_of(tensor[None])
        probability = float(1.0 / (1.0 + np.exp(-logit)))
        return jsonify(label=card.label_for(probability), confidence=card.confidence_for(probability),
                       fake_probability=probability, logit=logit)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--engine", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--onnx", help="ONNX file for --engine onnxruntime")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = create_app(args.checkpoint, args.engine, args.onnx)
    app.run(host=args.host, port=args.port, threaded=True)  # Flask's own server, as the seed projects run it


class NaiveServer:
    """Context manager: the naive server as a subprocess on ``127.0.0.1:port``, ready on entry, stopped on exit."""

    def __init__(self, checkpoint: str | Path, port: int, engine: str = "torch", onnx_path: str | Path | None = None,
                 ready_timeout_s: float = _READY_TIMEOUT_S, env: dict[str, str] | None = None) -> None:
        self.checkpoint, self.port, self.engine, self.onnx_path = Path(checkpoint), port, engine, onnx_path
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.process: ChildProcess | None = None
        self.log = ""

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "NaiveServer":
        command = [sys.executable, "-m", "deepfake_edge.benchmarks.naive_server", "--checkpoint", str(self.checkpoint),
                   "--engine", self.engine, "--port", str(self.port)]
        if self.onnx_path is not None:
            command += ["--onnx", str(self.onnx_path)]
        # Logs to a private file (Flask logs every request: a full pipe would stall the server), in a session of
        # its own (a Ctrl-C reaches only the benchmark, which then stops this server), SIGTERMed by the kernel if
        # the benchmark dies without stopping it.
        self.process = ChildProcess(command, env={**os.environ, **(self.env or {})}, stop_timeout_s=10.0,
                                    name=f"naive-{self.engine}").start()
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.poll()
                self.stop()
                raise RuntimeError(f"naive {self.engine} server exited with {code}:\n{self.log[-4000:]}")
            try:
                status, _ = request(self.port, "GET", "/health", timeout_s=2.0)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"naive {self.engine} server not ready in {self.ready_timeout_s:.0f} s:\n{self.log[-4000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.stop()  # SIGTERM, SIGKILL after 10 s
        self.log = self.process.log
        self.process = None

    def __enter__(self) -> "NaiveServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def request(port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 30.0,
            connection: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
    """One HTTP request to the naive server on ``127.0.0.1:port``; returns (status, decoded JSON)."""
    owned = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        if owned:
            connection.close()


def predict_sender(port: int, images: tuple[bytes, ...], timeout_s: float = 60.0):
    """A load-generator sender: one keep-alive connection, image ``n % len(images)`` per call."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def send(number: int) -> dict:
        status, answer = request(port, "POST", "/predict", images[number % len(images)], connection=connection)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer}")
        return answer

    return send


if __name__ == "__main__":
    main()
