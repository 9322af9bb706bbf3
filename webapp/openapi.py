"""The OpenAPI 3 description of the web API (served at ``GET /api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from deepfake_edge import __version__
from deepfake_edge.provenance import PROVENANCE_RECORD_SCHEMA
from deepfake_edge.regions import REGION_KINDS
from deepfake_edge.serving_contract import DEFAULT_MODEL
from deepfake_edge.tracks import VIDEO_RULES

_NUMBER = {"type": "number"}
_NULLABLE_NUMBER = {"type": "number", "nullable": True}
_NULLABLE_STRING = {"type": "string", "nullable": True}
_INTEGER = {"type": "integer"}
_BOX = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}

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
        "saw and the rest dimmed; both are `width` x `height` pixels. For a video, the same for its peak "
        "frame (the sampled frame with the highest fake probability)."
    ),
    "properties": {
        "alpha": _NUMBER,
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "image": {"type": "string", "format": "uri", "example": "data:image/jpeg;base64,/9j/4AAQ..."},
        "overlay": {"type": "string", "format": "uri", "example": "data:image/png;base64,iVBORw0..."},
    },
}

# The upload's Content Credentials (C2PA) and EXIF/XMP metadata, beside the verdict (docs/provenance.md);
# null when the server was started with --no-provenance.
_PROVENANCE = {**PROVENANCE_RECORD_SCHEMA, "nullable": True}
_PROVENANCE_REF = {"$ref": "#/components/schemas/Provenance"}

_REGION = {
    "type": "object",
    "description": "One scored region of the image (of a video's frame).",
    "properties": {
        "kind": {"type": "string", "enum": list(REGION_KINDS)},
        "box": {**_BOX, "description": "[x0, y0, x1, y1] in the original (EXIF-rotated) image's pixels; for a "
                                       "video, in the video's own (upright) pixels"},
        "fake_probability": _NUMBER,
    },
    "required": ["kind", "box", "fake_probability"],
}

_DETECTION = {
    "type": "object",
    "description": "The verdict on an image (`kind` image).",
    "properties": {
        "kind": {"type": "string", "enum": ["image"]},
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
                  "description": "what was capped: an image shrunk before tiling, faces beyond the limit; a "
                                 "name that says video for an image"},
        "heatmap": {"$ref": "#/components/schemas/Heatmap"},
        "provenance": _PROVENANCE_REF,
        "elapsed_ms": _NUMBER,
    },
    "required": ["kind", "label", "confidence", "fake_probability", "model", "model_version", "models",
                 "provenance"],
}

_TIMELINE_FRAME = {
    "type": "object",
    "description": "One sampled frame of a video and its score (its highest region's, as for a photo).",
    "properties": {
        "index": {"type": "integer", "description": "sample number, from 0 in time order"},
        "time_s": {"type": "number", "description": "presentation time, seconds from the first frame"},
        "fake_probability": _NUMBER,
        "regions": {"type": "array", "items": {"$ref": "#/components/schemas/Region"}},
    },
    "required": ["index", "time_s", "fake_probability", "regions"],
}

_TRACK = {
    "type": "object",
    "description": "A face followed through the sampled frames (boxes in video pixels).",
    "properties": {
        "track_id": _INTEGER,
        "frame_indices": {"type": "array", "items": _INTEGER},
        "boxes": {"type": "array", "items": _BOX},
        "fake_probability": {"type": "number", "description": "the median of the face's frame scores"},
    },
    "required": ["track_id", "frame_indices", "boxes", "fake_probability"],
}

_VIDEO_DETECTION = {
    "type": "object",
    "description": (
        "The verdict on a video (`kind` video): frames sampled in time (2 a second, at most 120), each "
        "analysed like a photo by the primary model alone, their scores made into one by `rule`. Every "
        "field is always present."
    ),
    "properties": {
        "kind": {"type": "string", "enum": ["video"]},
        "label": {"type": "string", "enum": ["Real", "Fake"]},
        "confidence": _NUMBER,
        "verdict": {"type": "string", "example": "Fake – 97.3%"},
        "fake_probability": {"type": "number", "description": "the video's score, by `rule`"},
        "logit": _NUMBER,
        "threshold": {"type": "number", "description": "the video threshold: fake_probability >= threshold "
                                                       "means Fake"},
        "rule": {"type": "string", "enum": list(VIDEO_RULES),
                 "description": "; ".join(f"{name}: {text}" for name, text in VIDEO_RULES.items())},
        "model": {"type": "string", "example": DEFAULT_MODEL},
        "model_title": {"type": "string", "example": "EfficientNet-B0"},
        "model_version": {"type": "string"},
        "mode": {"type": "string", "enum": ["whole", "fast"]},
        "peak": {
            "type": "object",
            "description": "the sampled frame with the highest fake probability",
            "properties": {"index": _INTEGER, "time_s": _NUMBER, "fake_probability": _NUMBER},
            "required": ["index", "time_s", "fake_probability"],
        },
        "timeline": {"type": "array", "items": {"$ref": "#/components/schemas/TimelineFrame"},
                     "description": "every sampled frame that was analysed, in time order"},
        "tracks": {"type": "array", "items": {"$ref": "#/components/schemas/FaceTrack"}},
        "video": {
            "type": "object",
            "description": "the video's header: upright size in pixels, duration (null when not declared), "
                           "frame rate, the rotation applied (degrees clockwise) and the codec",
            "properties": {"width": _INTEGER, "height": _INTEGER, "duration_s": _NULLABLE_NUMBER,
                           "fps": _NULLABLE_NUMBER, "rotation": {"type": "integer", "enum": [0, 90, 180, 270]},
                           "codec": {"type": "string", "example": "h264"}},
            "required": ["width", "height", "duration_s", "fps", "rotation", "codec"],
        },
        "notes": {"type": "array", "items": {"type": "string"},
                  "description": "what was capped or skipped: sampling lowered, decoding stopped at damage, "
                                 "frames not analysed, the comparison models not run, a name that says image"},
        "timings_s": {"type": "object", "additionalProperties": _NUMBER,
                      "description": "wall time per stage: open, decode, inference_wait, heatmap, total"},
        "filename": {"type": "string"},
        "models": {"type": "array", "items": {"$ref": "#/components/schemas/ModelScore"},
                   "description": "the primary model's entry only: the comparison models do not score videos"},
        "raw_scores": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"logit": _NUMBER, "fake_probability": _NUMBER},
            },
        },
        "regions": {"type": "array", "items": {"$ref": "#/components/schemas/Region"},
                    "description": "the peak frame's regions (as in its timeline entry)"},
        "heatmap": {"$ref": "#/components/schemas/Heatmap"},
        "provenance": _PROVENANCE_REF,
        "elapsed_ms": _NUMBER,
    },
    "required": ["kind", "label", "confidence", "verdict", "fake_probability", "logit", "threshold", "rule",
                 "model", "model_title", "model_version", "mode", "peak", "timeline", "tracks", "video", "notes",
                 "timings_s", "filename", "models", "raw_scores", "regions", "heatmap", "provenance", "elapsed_ms"],
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


def openapi_spec(max_upload_bytes: int, models: tuple[str, ...], max_video_bytes: int | None = None,
                 max_video_seconds: float | None = None, max_video_pixels: int | None = None) -> dict[str, Any]:
    """The API description for an app limited to ``max_upload_bytes`` (images) and the video limits, serving
    ``models``."""
    video_limits = ", ".join(part for part in (
        None if max_video_bytes is None else f"at most {max_video_bytes} bytes",
        None if max_video_seconds is None else f"{max_video_seconds:g} s",
        None if max_video_pixels is None else f"{max_video_pixels} pixels a frame") if part)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "deepfake-edge web API",
            "version": __version__,
            "description": (
                f"Upload an image, get the verdict of `{models[0]}` (with heatmap) and the scores of "
                f"{', '.join(f'`{m}`' for m in models[1:]) or 'no other model'}, served by Triton. "
                f"Upload a video (MP4/MOV, AVI, Matroska/WebM or animated GIF; {video_limits or 'server limits'}), "
                f"get `{models[0]}`'s verdict, a timeline of its frames and the peak frame's "
                "heatmap. Image or video is decided by the content, not the file name. Beside the verdict, never "
                "part of its score, `provenance` says what the file itself claims about its origin: its Content "
                "Credentials (C2PA: the tool that made or edited it, the signer, whether the signature is valid, "
                "AI-generated) and EXIF/XMP metadata. Uploads are processed in memory and never stored."
            ),
        },
        "paths": {
            "/api/detect": {
                "post": {
                    "summary": "Classify one image or video as Real or Fake",
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
                                            "description": f"the image, at most {max_upload_bytes} bytes, or "
                                                           f"the video{', ' + video_limits if video_limits else ''}",
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
                            "description": "the verdict: `kind` says whether the upload was an image or a video",
                            "content": {"application/json": {"schema": {
                                "oneOf": [{"$ref": "#/components/schemas/Detection"},
                                          {"$ref": "#/components/schemas/VideoDetection"}],
                            }}},
                        },
                        "400": _error_response("no file, empty file, not an image, corrupt, too many pixels or too "
                                               "elongated; a video that is damaged before its first frame, has "
                                               "no video stream (audio only) or no decodable frame"),
                        "408": _error_response("the request did not fully arrive within the server's deadline"),
                        "413": _error_response("upload larger than the configured limit (images and videos "
                                               "have their own), an image that would take more memory to decode "
                                               "than the server allows, a video longer than the limit or with "
                                               "frames larger than the limit"),
                        "502": _error_response("Triton failed on a valid image"),
                        "503": _error_response("Triton unreachable, restarting or the model not ready, or the server busy "
                                               "decoding other images (with Retry-After)"),
                        "504": _error_response("no answer within the configured timeout; a video not analysed "
                                               "within the video timeout"),
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
            "schemas": {"Detection": _DETECTION, "VideoDetection": _VIDEO_DETECTION,
                        "TimelineFrame": _TIMELINE_FRAME, "FaceTrack": _TRACK, "ModelScore": _MODEL_SCORE,
                        "Heatmap": _HEATMAP, "Region": _REGION, "Provenance": _PROVENANCE, "Error": _ERROR}
        },
    }
