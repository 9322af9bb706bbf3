"""deepfake-edge: an EfficientNet-B0 deepfake image detector served by NVIDIA Triton.

The repository's top-level folders are subpackages of this one (see pyproject.toml):
``deepfake_edge.training`` = training/, ``.export`` = export/, ``.server`` = server/,
``.client`` = client/, ``.webapp`` = webapp/, ``.benchmarks`` = benchmarks/.
"""

__version__ = "0.1.0"
