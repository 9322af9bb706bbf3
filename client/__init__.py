"""Python client for the deepfake-edge Triton service (sync and asyncio, gRPC and HTTP).

Imports of tritonclient happen when a client is constructed, so importing this package is cheap.
"""

from deepfake_edge.client.async_client import AsyncDeepfakeClient
from deepfake_edge.client.errors import (
    BadImageError,
    DeepfakeClientError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnreachableError,
)
from deepfake_edge.client.results import Detection, Failure, RegionScore, Result
from deepfake_edge.client.sync_client import DeepfakeClient
from deepfake_edge.client.triton_io import ModelInfo

__all__ = [
    "AsyncDeepfakeClient",
    "BadImageError",
    "DeepfakeClient",
    "DeepfakeClientError",
    "Detection",
    "Failure",
    "ModelInfo",
    "ModelNotReadyError",
    "RegionScore",
    "RequestTimeoutError",
    "Result",
    "ServerError",
    "ServerUnreachableError",
]
