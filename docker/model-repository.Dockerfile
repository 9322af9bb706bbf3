# The ONNX-backend model repository (model_repository/ngc) as a small image, for the Triton pod's init
# container in deploy/kubernetes/triton-deployment.yaml, which copies /models into the pod.
# Build context: the repository root, after `deepfake-edge export` (or `make model-repository`) wrote
# model_repository/ngc:
#
#   docker build -f docker/model-repository.Dockerfile -t deepfake-edge-model-repository:0.1.0 .
#
# One image per exported model version: tag it with the version, roll back by tag (docs/kubernetes.md).
FROM busybox:1.36.1

COPY model_repository/ngc /models

# Readable by any user; the pod runs the copy as Triton's uid 1000.
USER 65532:65532
