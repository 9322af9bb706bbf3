"""The OpenAPI 3 description of the web API (served at ``GET /api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from deepfake_edge import __version__
from deepfake_edge.serving_contract import DEFAULT_MODEL

_NUMBER = {"type": "number"}
_NULLABLE_NUMBER = {"type": "number", "nullable": True}
_NULLABLE_STRING = {"type": "string", "nullable": True}

_MODEL_SCORE = {
    "type": "object",
    "description": "One model's answer; only name, title, role and error are set when that model failed.",
    "properties": {
        "name": {"type": "string", "description": "Triton model name"},
        "title": {"type": "string", "example": "EfficientNet-B0"},
        "role": {"type": "string", "enum": ["primary", "baseline"]},
        "version": _NULLABLE_STRING,
        "label": {"type": "string", "enum": ["Real", "Fake", None], "nullable": True},
        "confidence": _NULLABLE_NUMBER,
        "fake_probability": _NULLABLE_NUMBER,
        "logit": _NULLABLE_NUMBER,
        "threshold": _NULLABLE_NUMBER,
        "verdict": {"type": "string", "nullable": True, "example": "Fake – 97.3%"},
        "error": _NULLABLE_STRING,
    },
    "required": ["name", "title", "role"],
}

_HEATMAP = {
    "type": "object",
    "nullable": True,
    "description": (
        "Class-activation heatmap of the primary model: over the whole image in whole mode (stitched from "
        "its regions, each weighted by its fake probability), over the centre crop in fast mode. `image` "
        "is the upload (EXIF-rotated, longest side at most 512 px) as a JPEG data URL and `overlay` the "
        "same picture as a PNG data URL, with the heatmap blended in at `alpha` over the region the model "
        "saw and the rest dimmed; both are `width` x `height` pixels."
    ),
    "properties": {
        "alpha": _NUMBER,
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "image": {"type": "string", "format": "uri", "example": "data:image/jpeg;base64,/9j/4AAQ..."},
        "overlay": {"type": "string", "format": "uri", "example": "data:image/png;base64,iVBORw0..."},
    },
}

_REGION = {
    "type": "object",
    "description": "One scored region of the image.",
    "properties": {
        "kind": {"type": "string", "enum": ["face", "tile", "global"]},
        "box": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
                "description": "[x0, y0, x1, y1] in the original (EXIF-rotated) image's pixels"},
        "fake_probability": _NUMBER,
    },
    "required": ["kind", "box", "fake_probability"],
}

_DETECTION = {
    "type": "object",
    "properties": {
        "filename": {"type": "string"},
        "label": {"type": "string", "enum": ["Real", "Fake"], "description": "verdict of the primary model"},
        "confidence": {"type": "number", "description": "how sure the model is of `label` (0.5-1): the fake "
                       "probability re-centred on the threshold, which reads 0.5"},
        "fake_probability": _NUMBER,
        "logit": _NUMBER,
        "verdict": {"type": "string", "example": "Fake – 97.3%"},
        "threshold": {"type": "number", "description": "fake_probability >= threshold means Fake"},
        "model": {"type": "string", "example": DEFAULT_MODEL},
        "model_title": {"type": "string", "example": "EfficientNet-B0"},
        "model_version": {"type": "string"},
        "models": {"type": "array", "items": {"$ref": "#/components/schemas/ModelScore"}},
        "raw_scores": {
            "type": "object",
            "description": "logit and fake_probability per model that answered",
            "additionalProperties": {
                "type": "object",
                "properties": {"logit": _NUMBER, "fake_probability": _NUMBER},
            },
        },
        "image": {
            "type": "object",
            "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
        },
        "mode": {"type": "string", "enum": ["whole", "fast"],
                 "description": "whole: faces, native-resolution tiles and the global view; fast: the global view"},
        "regions": {"type": "array", "items": {"$ref": "#/components/schemas/Region"},
                    "description": "every region scored (empty in fast mode); the highest decides"},
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "what was capped: an image shrunk before tiling, faces beyond the limit"},
        "heatmap": {"$ref": "#/components/schemas/Heatmap"},
        "elapsed_ms": _NUMBER,
    },
    "required": ["label", "confidence", "fake_probability", "model", "model_version", "models"],
}

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "what went wrong, for a person"}},
    "required": ["error"],
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_spec(max_upload_bytes: int, models: tuple[str, ...]) -> dict[str, Any]:
    """The API description for an app limited to ``max_upload_bytes`` and serving ``models``."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "deepfake-edge web API",
            "version": __version__,
            "description": (
                f"Upload an image, get the verdict of `{models[0]}` (with heatmap) and the scores of "
                f"{', '.join(f'`{m}`' for m in models[1:]) or 'no other model'}, served by Triton. "
                "Uploads are processed in memory and never stored."
            ),
        },
        "paths": {
            "/api/detect": {
                "post": {
                    "summary": "Classify one image as Real or Fake",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "file": {
                                            "type": "string",
                                            "format": "binary",
                                            "description": f"the image, at most {max_upload_bytes} bytes",
                                        },
                                        "heatmap": {
                                            "type": "string",
                                            "enum": ["1", "0"],
                                            "default": "1",
                                            "description": "0 skips the heatmap (faster)",
                                        },
                                        "mode": {
                                            "type": "string",
                                            "enum": ["whole", "fast"],
                                            "default": "whole",
                                            "description": "whole-image analysis, or the single fast view",
                                        },
                                        "heatmap_alpha": {
                                            "type": "number",
                                            "minimum": 0,
                                            "maximum": 1,
                                            "default": 0.5,
                                            "description": "heatmap strength in `heatmap.overlay`",
                                        },
                                    },
                                    "required": ["file"],
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the verdict",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Detection"}}},
                        },
                        "400": _error_response("no file, empty file, not an image, corrupt, too many pixels or too elongated"),
                        "408": _error_response("the request did not fully arrive within the server's deadline"),
                        "413": _error_response("upload larger than the configured limit, or an image that "
                                               "would take more memory to decode than the server allows"),
                        "502": _error_response("Triton failed on a valid image"),
                        "503": _error_response("Triton unreachable, restarting or the model not ready, or the server busy "
                                               "decoding other images (with Retry-After)"),
                        "504": _error_response("no answer within the configured timeout"),
                    },
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Readiness of Triton and of each model",
                    "responses": {
                        "200": {"description": "the primary model is ready"},
                        "503": {"description": "Triton or the primary model is unavailable"},
                    },
                }
            },
            "/api/openapi.json": {
                "get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI 3"}}}
            },
        },
        "components": {
            "schemas": {"Detection": _DETECTION, "ModelScore": _MODEL_SCORE, "Heatmap": _HEATMAP, "Region": _REGION,
                        "Error": _ERROR}
        },
    }
