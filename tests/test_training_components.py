"""Training building blocks: Lite0 weight mapping, augmentation, dataset items, blend masks, checkpoint round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_edge._compat import import_timm
from deepfake_edge.checkpoint import load_checkpoint, save_checkpoint
from deepfake_edge.model_card import ModelCard
from deepfake_edge.models import build_model, freeze_early_layers, train_mode
from deepfake_edge.preprocessing import Preprocessor, normalize
from deepfake_edge.training.blend_localisation import BlendMaskHead, blend_fractions
from deepfake_edge.training.datasets import Sample, blend_mask_paths
from deepfake_edge.training.init_weights import (
    LITE0_MEAN_STD, lite0_to_timm, lite0_weights_path, load_initial_weights, read_state_dict,
)
from deepfake_edge.training.transforms import AugmentConfig, DetectorDataset, TrainAugment, collate

torch.set_num_threads(2)
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_packaged_lite0_weights_map_onto_timm_and_still_recognise_a_cat():
    from skimage import data

    model = import_timm().create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    counts = load_initial_weights(model, "lite0")
    assert counts["loaded"] == counts["source_tensors"] == 294  # every conv/BN; only the classifier is new
    state = read_state_dict(lite0_weights_path())
    model.classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    cat = Image.fromarray(data.chelsea()).resize((224, 224), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(cat).transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        top = model(normalize(pixels, *LITE0_MEAN_STD)).argmax(1).item()
    assert top in IMAGENET_CATS


def test_lite0_fills_every_conv_and_bn_of_b0_and_opens_its_squeeze_excite_gates():
    model = build_model("efficientnet_b0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counts = load_initial_weights(model, "lite0")
    assert counts["loaded"] == 294 and counts["identity_se_blocks"] == 16
    mapped = lite0_to_timm(read_state_dict(lite0_weights_path()))
    after = model.state_dict()
    for name, tensor in mapped.items():
        torch.testing.assert_close(after[name], tensor.to(after[name].dtype))
    se = model.blocks[3][0].se
    assert torch.all(se.conv_expand.weight == 0) and torch.all(se.conv_expand.bias == 3.0)
    assert torch.equal(after["classifier.weight"], before["classifier.weight"])  # left to the trainer


def test_initial_weights_from_a_checkpoint_file_and_a_mismatching_one(tmp_path):
    source = build_model("small_cnn")
    path = save_checkpoint(tmp_path / "cnn.safetensors", source, ModelCard(arch="small_cnn"))
    target = build_model("small_cnn")
    assert load_initial_weights(target, str(path))["loaded"] == len(source.state_dict())
    torch.testing.assert_close(target.state_dict(), source.state_dict())
    with pytest.raises(ValueError, match="different architecture"):
        load_initial_weights(build_model("tf_efficientnet_lite0"), str(path))
    with pytest.raises(FileNotFoundError):
        load_initial_weights(target, str(tmp_path / "missing.pt"))


def test_checkpoint_round_trip_float16(tmp_path):
    model = build_model("small_cnn").eval()
    card = ModelCard(arch="small_cnn", input_size=48, resize_size=56, threshold=0.37,
                     training_data="unit test", metrics={"validation": {"roc_auc": 0.9}})
    path = save_checkpoint(tmp_path / "m.safetensors", model, card, dtype=torch.float16)
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card == card
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=2e-2, atol=2e-2)


def test_confidence_reads_50_percent_at_the_threshold_and_never_less():
    card = ModelCard(arch="x", threshold=0.79)
    assert card.confidence_for(0.79) == pytest.approx(0.5)
    # 0.785 is "Real" by a hair: 1 - p would claim "Real - 21.5%"; re-centred it is just over 50 %.
    assert card.label_for(0.785) == "Real" and 0.5 < card.confidence_for(0.785) < 0.52
    assert card.confidence_for(0.0) == 1.0 and card.confidence_for(1.0) == 1.0
    scores = np.linspace(0, 1, 101)
    confidences = [card.confidence_for(p) for p in scores]
    assert min(confidences) >= 0.5
    fake_side = [c for p, c in zip(scores, confidences) if p >= 0.79]
    assert fake_side == sorted(fake_side)  # more fake-looking, more sure of "Fake"
    even = ModelCard(arch="x", threshold=0.5)
    assert [even.confidence_for(p) for p in (0.1, 0.5, 0.973)] == pytest.approx([0.9, 0.5, 0.973])


@pytest.fixture()
def photo(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(path)
    return path


def test_augmentation_is_a_function_of_seed_epoch_and_index(photo):
    dataset = DetectorDataset([Sample(photo, 1)] * 2, Preprocessor(64, 73), TrainAugment(64), seed=3)
    first, label = dataset[0]
    assert first.dtype == torch.uint8 and first.shape == (3, 64, 64) and label == 1.0
    assert torch.equal(dataset[0][0], first)  # same (seed, epoch, index): same pixels
    assert not torch.equal(dataset[1][0], first)  # another index draws other augmentations
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0], first)


def test_eval_items_are_exactly_the_shared_preprocessing(photo):
    preprocessor = Preprocessor(64, 73)
    image, _ = DetectorDataset([Sample(photo, 0)], preprocessor)[0]
    assert np.array_equal(image.numpy(), preprocessor(photo))


def test_unreadable_items_are_dropped_and_counted(photo, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:100])
    dataset = DetectorDataset([Sample(photo, 0), Sample(broken, 1)], Preprocessor(32, 32), TrainAugment(32))
    images, labels, dropped = collate([dataset[0], dataset[1]])
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [0.0] and dropped == 1


def test_a_blend_mask_gets_the_crop_and_flip_of_its_image_and_changes_no_random_draw(photo):
    geometry_only = TrainAugment(48, config=AugmentConfig(jitter_p=0, blur_p=0, jpeg_p=0))
    image = Image.open(photo).convert("RGB")
    mask = image.convert("L")  # a "mask" that is the image itself: after augmentation they must still agree
    for seed in range(6):  # covers flipped and unflipped draws
        with_mask, augmented_mask = geometry_only(image, np.random.default_rng(seed), mask)
        without_mask, none = geometry_only(image, np.random.default_rng(seed))
        assert none is None and np.array_equal(np.asarray(with_mask), np.asarray(without_mask))
        difference = np.abs(np.asarray(augmented_mask, np.int16) - np.asarray(with_mask.convert("L"), np.int16))
        assert augmented_mask.size == (48, 48) and difference.max() <= 2  # rounding of two bilinear resizes


def test_training_items_carry_the_fake_mask_and_a_zero_mask_for_the_real(tmp_path):
    rng = np.random.default_rng(4)
    real, fake, mask_file = tmp_path / "Real" / "0.png", tmp_path / "Fake" / "0.png", tmp_path / "masks" / "0.png"
    for path in (real, fake, mask_file):
        path.parent.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(real)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(fake)
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :20] = 255
    Image.fromarray(mask).save(mask_file)
    samples = [Sample(real, 0), Sample(fake, 1)]
    assert blend_mask_paths(samples) == [None, mask_file]
    dataset = DetectorDataset(samples, Preprocessor(32, 32), TrainAugment(32, config=AugmentConfig(crop_scale=(1, 1))),
                              mask_paths=blend_mask_paths(samples))
    images, labels, dropped, masks = collate([dataset[0], dataset[1]])
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 1, 32, 32) and masks.dtype == torch.uint8
    assert masks[0].max() == 0 and 0.4 < masks[1].float().mean() / 255 < 0.6  # half blended, maybe flipped
    mask_file.unlink()
    with pytest.raises(ValueError, match="no blend mask"):
        blend_mask_paths(samples)
    with pytest.raises(ValueError, match="training augmentation"):
        DetectorDataset(samples, Preprocessor(32, 32), mask_paths=[None, None])


def test_blend_targets_are_the_blended_fraction_of_each_feature_cell():
    masks = torch.zeros((1, 1, 8, 8), dtype=torch.uint8)
    masks[..., :4, :4] = 255
    masks[..., 4:, :2] = 255
    torch.testing.assert_close(blend_fractions(masks, (2, 2)), torch.tensor([[[[1.0, 0.0], [0.5, 0.0]]]]))
    head = BlendMaskHead(channels=5)
    features = torch.randn(1, 5, 2, 2)
    assert head(features).shape == (1, 1, 2, 2)
    # starting at p = 0.5 everywhere, the loss is ln 2 whatever the target
    assert head.loss(features, masks).item() == pytest.approx(np.log(2))


def test_real_fake_twins_are_paired_batched_together_and_augmented_alike(tmp_path):
    from deepfake_edge.training.pairing import GroupBatchSampler, group_keys, pair_groups

    rng = np.random.default_rng(2)
    samples = []
    for name in ("a.png", "b.png", "c.png"):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        for label, folder in enumerate(("Real", "Fake")):
            path = tmp_path / "train" / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)  # identical twins: only the augmentation could tell them apart
            samples.append(Sample(path, label))
    lone = tmp_path / "train" / "Fake" / "lone.png"
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(lone)
    samples.append(Sample(lone, 1))

    groups = pair_groups(samples)
    assert groups == [[0, 1], [2, 3], [4, 5], [6]]
    sampler = GroupBatchSampler(groups, batch_size=4, generator=torch.Generator().manual_seed(0), drop_last=False)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 and sorted(sum(batches, [])) == list(range(7))
    for batch in batches:  # a pair is never split across batches when the batch size is even
        for group in groups[:3]:
            assert set(group) <= set(batch) or not set(group) & set(batch)

    dataset = DetectorDataset(samples, Preprocessor(32, 36), TrainAugment(32), seed=5,
                              rng_keys=group_keys(groups, len(samples)))
    for real, fake in groups[:3]:
        assert torch.equal(dataset[real][0], dataset[fake][0])
    assert not torch.equal(dataset[0][0], dataset[2][0])


def test_frozen_layers_stay_in_eval_mode_and_mismatched_regularisers_are_clear_errors():
    model = build_model("efficientnet_b0", drop_path_rate=0.2)
    stem_and_three = sum(p.numel() for m in (model.conv_stem, model.bn1, *model.blocks[:3]) for p in m.parameters())
    assert freeze_early_layers(model, 3) == stem_and_three
    train_mode(model)
    assert model.training and not model.bn1.training and not model.blocks[2][0].bn1.training
    assert model.blocks[3][0].bn1.training
    with pytest.raises(ValueError, match="between 0 and 7"):
        freeze_early_layers(model, 8)
    with pytest.raises(ValueError, match="conv_stem"):
        freeze_early_layers(build_model("small_cnn"), 1)
    with pytest.raises(ValueError, match="stochastic depth"):
        build_model("small_cnn", drop_path_rate=0.1)


def test_learning_rate_warms_up_per_step_then_decays_by_cosine_and_round_trips_through_the_state_file(tmp_path):
    from deepfake_edge.training.config import TrainConfig
    from deepfake_edge.training.train import _optimizer, _scheduler

    config = TrainConfig(epochs=3, lr=1e-2, warmup_epochs=1.0, min_lr_ratio=0.1, weight_decay=0.05)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LazyLinear(1))
    model(torch.zeros(2, 3, 5, 5))
    optimizer = _optimizer(model, config)
    decays = {p.ndim: group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decays == {4: 0.05, 2: 0.05, 1: 0.0}  # none on norms and biases
    scheduler = _scheduler(optimizer, config, steps_per_epoch=4)  # 12 steps, the first 4 warming up
    lrs = []
    for step in range(13):
        lrs.append(optimizer.param_groups[0]["lr"])
        assert all(group["lr"] == lrs[-1] for group in optimizer.param_groups)
        scheduler.step_update(step + 1)
    warmup = [1e-2 * (k + 1) / 5 for k in range(4)]
    cosine = [1e-3 + 0.5 * 9e-3 * (1 + np.cos(np.pi * k / 8)) for k in range(8)]
    np.testing.assert_allclose(lrs, [*warmup, *cosine, 1e-3], rtol=1e-12)

    torch.save({"scheduler": scheduler.state_dict()}, tmp_path / "state.pt")
    restored = _scheduler(_optimizer(model, config), TrainConfig(), steps_per_epoch=1)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True)["scheduler"])
    restored.step_update(6)
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(cosine[2])


def test_training_state_prefers_a_higher_auc_then_a_lower_loss_and_counts_stale_epochs():
    from deepfake_edge.training.train_state import TrainingState

    state = TrainingState()
    assert state.record(1, float("nan"), 0.7)  # a NaN AUC (one class) counts as 0 and still beats nothing
    assert state.record(2, 0.9, 0.8) and state.best_epoch == 2
    assert not state.record(3, 0.85, 0.1) and state.stale_epochs == 1
    assert state.record(4, 0.90005, 0.5) and (state.best_epoch, state.best_auc, state.stale_epochs) == (4, 0.90005, 0)
    assert not state.record(5, 0.9, 0.6) and (state.epoch, state.stale_epochs) == (5, 1)
    state.train_images, state.train_seconds = 300, 2.0
    assert state.throughput == 150.0


def test_state_files_of_other_versions_are_refused(tmp_path):
    from deepfake_edge.training.config import TrainConfig
    from deepfake_edge.training.train_state import config_from_state

    old = tmp_path / "last_state.pt"
    torch.save({"config": vars(TrainConfig()), "progress": {"epoch": 1}}, old)
    with pytest.raises(ValueError, match="not a state file of this version"):
        config_from_state(old)


def test_train_help_shows_train_config_defaults_and_explains_every_option():
    import argparse
    import dataclasses

    from deepfake_edge.cli import build_parser
    from deepfake_edge.training.config import TrainConfig

    parser = build_parser()
    args = parser.parse_args(["train", "data"])
    for field in dataclasses.fields(TrainConfig):
        if hasattr(args, field.name):
            assert getattr(args, field.name) == getattr(TrainConfig(), field.name), field.name
    assert {"epochs", "lr", "pair_batches", "drop_path_rate", "init_weights"} <= set(vars(args))
    assert parser.parse_args(["train", "data", "--no-pair-batches"]).pair_batches is False
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    assert all(action.help for action in train._actions)
    text = " ".join(train.format_help().split())
    assert "(default: None)" not in text and "--no-pair-batches (default" not in text
    assert "(default: 10)" in text and "(default: efficientnet_b0)" in text
