"""Parity: the tensor the client sends == the tensor training evaluation computes, byte for byte.

The client builds its preprocessing from the card the *server* publishes; training evaluation builds it
from the card in the checkpoint (``eval_preprocessor`` -> ``DetectorDataset``). The export stores the
checkpoint's card in the ONNX file and in config.pbtxt, so the two must agree on every input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client_samples import photo
from deepfake_edge.client import DeepfakeClient
from deepfake_edge.export.graph import read_onnx_card
from deepfake_edge.serving_contract import latest_version_dir
from deepfake_edge.training.datasets import Sample
from deepfake_edge.training.transforms import DetectorDataset, eval_preprocessor

pytestmark = pytest.mark.server

MODELS = ("deepfake_b0", "deepfake_cnn")


def _exif_rotated(image: Image.Image) -> dict:
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise on display
    return {"exif": exif}


# (file name, builder, save options): modes and sizes users have, from tiny to panoramic.
CASES = [
    ("rgb_512.jpg", lambda: photo("astronaut"), {"quality": 92}),
    ("rgb_wide.png", lambda: photo("coffee").resize((1000, 137)), {}),
    ("rgb_tall.png", lambda: photo("chelsea").resize((90, 400)), {}),
    ("tiny_12x9.png", lambda: photo("rocket").resize((12, 9)), {}),
    ("grey_L.png", lambda: photo("camera"), {}),
    ("grey_16bit.png", lambda: Image.fromarray(np.asarray(photo("camera"), dtype=np.uint16) * 257), {}),
    ("rgba.png", lambda: photo("chelsea").convert("RGBA"), {}),
    ("palette.png", lambda: photo("coffee").convert("P"), {}),
    ("cmyk.jpg", lambda: photo("coffee").convert("CMYK"), {"quality": 92}),
    ("exif_rotated.jpg", lambda: photo("rocket"), "exif"),
    ("animated.gif", lambda: photo("astronaut").convert("P"), "gif"),
]


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("parity")
    paths = []
    for name, build, options in CASES:
        image = build()
        if options == "exif":
            options = _exif_rotated(image)
        if options == "gif":
            image.save(folder / name, save_all=True, append_images=[photo("camera").convert("P")], duration=50)
        else:
            image.save(folder / name, **options)
        paths.append(folder / name)
    return paths


@pytest.mark.parametrize("model", MODELS)
def test_client_tensor_equals_training_evaluation_tensor(triton_server, case_files, model):
    with DeepfakeClient(triton_server.grpc_url, model=model) as client:
        served_card = client.model_info().card
        client_tensors = [client.preprocess(path, mode="fast")[0] for path in case_files]  # the one view
    checkpoint_card = read_onnx_card(latest_version_dir(triton_server.model_repository / model) / "model.onnx")
    # The export may annotate the served card (e.g. extra["precision"]); what preprocessing and the verdict
    # depend on must be the checkpoint's.
    assert eval_preprocessor(served_card) == eval_preprocessor(checkpoint_card)
    assert (served_card.labels, served_card.threshold) == (checkpoint_card.labels, checkpoint_card.threshold)
    dataset = DetectorDataset([Sample(path, 0) for path in case_files], eval_preprocessor(checkpoint_card))
    for index, (path, sent) in enumerate(zip(case_files, client_tensors)):
        evaluated = dataset[index][0].numpy()
        side = checkpoint_card.input_size
        assert sent.shape == evaluated.shape == (3, side, side) and sent.dtype == evaluated.dtype == np.uint8
        assert sent.tobytes() == evaluated.tobytes(), f"{path.name}: client and training evaluation differ"
