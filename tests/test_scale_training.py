"""Training for photos from elsewhere: multi-scale batches and the COCO "sports ball" start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.tiny_data import tiny_ball_dataset
from mhyolo.data.augment import AugmentConfig
from mhyolo.errors import ConfigError, WeightsError
from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.multiscale import MultiScale
from mhyolo.train.state import build_training_model
from mhyolo.train.trainer import Trainer

SPORTS_BALL = 32


def test_multi_scale_sizes_stay_in_bounds_on_the_stride_and_vary() -> None:
    scale = MultiScale(imgsz=320, stride=32, low=0.5, high=1.5, seed=0)
    sizes = [scale.size(epoch, batch) for epoch in range(3) for batch in range(100)]
    assert min(sizes) >= 160 and max(sizes) <= 480
    assert all(s % 32 == 0 for s in sizes)
    assert min(sizes) == 160 and max(sizes) == 480  # both ends are reachable in 300 draws of 11 sizes
    assert len(set(sizes)) == 11
    # a pure function of (seed, epoch, batch): resume and DDP ranks draw the same sizes
    assert scale.size(2, 7) == MultiScale(320, 32, 0.5, 1.5, seed=0).size(2, 7)
    assert sizes != [MultiScale(320, 32, 0.5, 1.5, seed=1).size(e, b) for e in range(3) for b in range(100)]


def test_multi_scale_resizes_the_batch_to_its_size() -> None:
    scale = MultiScale(imgsz=128, stride=32, low=0.5, high=1.5, seed=3)
    images = torch.rand(2, 3, 128, 128)
    for batch in range(10):
        out = scale(images, 0, batch)
        assert out.shape == (2, 3, scale.size(0, batch), scale.size(0, batch))


@pytest.mark.parametrize("low, high", [(0.0, 1.5), (1.2, 1.5), (0.5, 0.9)])
def test_multi_scale_refuses_a_range_without_the_nominal_size(low: float, high: float) -> None:
    with pytest.raises(ConfigError, match="multi_scale"):
        MultiScale(imgsz=320, stride=32, low=low, high=high)


def test_train_config_refuses_a_malformed_multi_scale() -> None:
    with pytest.raises(ConfigError, match=r"\[low, high\]"):
        TrainConfig(multi_scale=[0.5])


def test_training_with_multi_scale_sees_several_sizes(shared: Path, tmp_path: Path, official_weights: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = tiny_ball_dataset(shared, tmp_path / "data")
    seen: list[int] = []
    from mhyolo.train import objective

    original = objective.TrainingObjective.forward

    def spy(self, outputs, targets, *features_and_images):
        seen.append(int(outputs["detection"][0].shape[2] * 8))  # P3 grid cells x stride 8
        return original(self, outputs, targets, *features_and_images)

    monkeypatch.setattr(objective.TrainingObjective, "forward", spy)
    config = TrainConfig(data=str(data), weights=str(official_weights), epochs=2, imgsz=128, batch=2, workers=0,
                         close_mosaic=0, multi_scale=[0.5, 1.5], val_every=2,
                         optim=OptimConfig(warmup_epochs=0.0, nominal_batch=2), augment=AugmentConfig(mosaic=0.0))
    Trainer(config, tmp_path / "run", progress=False).run()
    assert len(seen) == 12 and len(set(seen)) > 1
    assert all(64 <= s <= 192 and s % 32 == 0 for s in seen)


@torch.no_grad()
def test_one_class_detector_starts_as_the_coco_sports_ball_detector(official_weights: Path) -> None:
    coco, _ = build_training_model(str(official_weights), None, [str(i) for i in range(80)])
    ball, _ = build_training_model(str(official_weights), None, ["ball"], seed_class=SPORTS_BALL)
    plain, _ = build_training_model(str(official_weights), None, ["ball"])
    coco.eval(), ball.eval(), plain.eval()
    x = torch.rand(1, 3, 128, 160)
    for level, (c, b, p) in enumerate(zip(coco(x)["detection"], ball(x)["detection"], plain(x)["detection"])):
        # objectness logit = COCO objectness logit + COCO "sports ball" logit; boxes unchanged
        torch.testing.assert_close(b[..., 4], c[..., 4] + c[..., 5 + SPORTS_BALL], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b[..., :4], c[..., :4])
        torch.testing.assert_close(p[..., 4], c[..., 4])  # without it: plain COCO objectness
        assert not torch.allclose(b[..., 4], p[..., 4]), level


@torch.no_grad()
def test_several_classes_all_start_from_the_seed_class(official_weights: Path) -> None:
    coco, _ = build_training_model(str(official_weights), None, [str(i) for i in range(80)])
    typed, _ = build_training_model(str(official_weights), None, ["basketball", "football", "tennis-ball"],
                                    seed_class=SPORTS_BALL)
    coco.eval(), typed.eval()
    x = torch.rand(1, 3, 64, 64)
    for c, t in zip(coco(x)["detection"], typed(x)["detection"]):
        for k in range(3):
            torch.testing.assert_close(t[..., 5 + k], c[..., 5 + SPORTS_BALL], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(t[..., 4], c[..., 4])


def test_class_init_outside_the_pretrained_classes_is_refused(official_weights: Path) -> None:
    with pytest.raises(WeightsError, match="80"):
        build_training_model(str(official_weights), None, ["ball"], seed_class=80)
    with pytest.raises(WeightsError, match="pretrained weights"):
        build_training_model(None, "yolov5n", ["ball"], seed_class=SPORTS_BALL)


def test_freeze_layers_keeps_the_early_rows_bit_identical(shared: Path, tmp_path: Path,
                                                          official_weights: Path) -> None:
    from mhyolo.model.weights import load_checkpoint

    data = tiny_ball_dataset(shared, tmp_path / "data")
    start, _ = build_training_model(str(official_weights), None, ["ball"])
    config = TrainConfig(data=str(data), weights=str(official_weights), epochs=1, imgsz=64, batch=4, workers=0,
                         close_mosaic=0, freeze_layers=3, optim=OptimConfig(warmup_epochs=0.0, nominal_batch=4),
                         augment=AugmentConfig(mosaic=0.0))
    summary = Trainer(config, tmp_path / "run", progress=False).run()
    trained = load_checkpoint(summary.last)
    raw = {k[len("train/"):]: v for k, v in trained.extra.items() if k.startswith("train/")}
    before = start.state_dict()
    for state in (raw, trained.model.state_dict()):  # the trained weights and their EMA
        early = [k for k in before if k.split(".")[1] in ("0", "1", "2")]
        assert early and all(torch.equal(state[k], before[k]) for k in early)
        assert any(not torch.equal(state[k], before[k]) for k in before
                   if k.split(".")[1] == "3" and state[k].is_floating_point())


def test_a_trained_model_is_run_at_its_training_size_unless_told(shared: Path, tmp_path: Path,
                                                                official_weights: Path) -> None:
    from mhyolo.runtime.load import input_size
    from mhyolo.model.weights import load_model, trained_imgsz

    data = tiny_ball_dataset(shared, tmp_path / "data", per_type_train=1, per_type_val=1)
    config = TrainConfig(data=str(data), weights=str(official_weights), epochs=1, imgsz=96, batch=3, workers=0,
                         close_mosaic=0, optim=OptimConfig(warmup_epochs=0.0), augment=AugmentConfig(mosaic=0.0))
    summary = Trainer(config, tmp_path / "run", progress=False).run()
    model = load_model(summary.best)
    assert model.trained_imgsz == 96 and trained_imgsz(summary.best) == 96
    assert input_size(model, None) == 96 and input_size(model, 320) == 320
    official = load_model(official_weights)
    assert official.trained_imgsz is None and input_size(official, None) == 640
