"""The web app's default upload limits, importable without Flask (``deepfake-edge web --help`` shows them)."""

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_VIDEO_SECONDS = 60.0
# Largest video frame decoded (pixels; 1920x1080, either way up). Decoding holds ~32 bytes per frame pixel
# (reference frames; see webapp/decode_budget.py), so each video reserves ~131 MB of the 256 MB decode budget
# at this limit; 4K would need ~300 MB and an 8K stream with 16 reference frames took 1 GB.
DEFAULT_MAX_VIDEO_PIXELS = 1920 * 1080
# A video is up to 120 frames, each a whole-image analysis: it gets its own deadline, not the per-call timeout.
DEFAULT_VIDEO_TIMEOUT_S = 120.0
