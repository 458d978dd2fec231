"""The activation as a model option (`act:`): ReLU models build with no SiLU anywhere, take the COCO
(SiLU) weights into every row they share with the SiLU model, export without SiLU's Sigmoid x Mul
pair (in FP32 and in ONNX Runtime INT8), and a pipeline's `act:` reaches every stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from helpers.models import sports_ball_model
from mhyolo.errors import ConfigError, WeightsError
from mhyolo.model.layers import ACTIVATIONS, Conv
from mhyolo.model.yolo import YoloModel, load_model_config
from mhyolo.paths import shared_dir

CONFIGS = Path(__file__).parents[1] / "configs"
RELU_PAIRS = {"yolov5n-relu": "yolov5n", "yolov5n-relu-typehead-lite": "yolov5n-typehead-lite"}
SEED_BALLS = shared_dir() / "data" / "seed_balls" / "data.yaml"
ACTIVATION_TYPES = (nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.Hardswish, nn.GELU, nn.Sigmoid)
EXPORT_SIZE = 128


def activation_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, ACTIVATION_TYPES)}


# ----------------------------------------------------------------------------- building
@pytest.mark.parametrize("name", sorted(RELU_PAIRS))
def test_relu_architectures_have_only_relu_and_the_silu_models_tensors(name: str) -> None:
    relu, silu = YoloModel(name), YoloModel(RELU_PAIRS[name])
    assert relu.act == "relu" and silu.act == "silu"
    assert activation_types(relu) == {nn.ReLU}
    assert activation_types(silu) == {nn.SiLU}
    convs = [m for m in relu.modules() if isinstance(m, Conv)]
    assert convs and all(isinstance(m.act, nn.ReLU) for m in convs)
    assert {k: v.shape for k, v in relu.state_dict().items()} == {k: v.shape for k, v in silu.state_dict().items()}


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("name", ["yolov5n-typehead", "yolov5n-decoupled-typehead-lite"])
def test_act_reaches_the_heads_convolutions_too(name: str, act: str) -> None:
    """The 3x3 type head and the decoupled detection head have their own `Conv`s."""
    model = YoloModel(name, act=act)
    expected = type(ACTIVATIONS[act]())
    assert activation_types(model) == {expected}
    assert model.act == act and model.yaml["act"] == act  # what a checkpoint stores
    head_convs = [m for head in model.heads.values() for m in head.modules() if isinstance(m, Conv)]
    assert head_convs and all(isinstance(m.act, expected) for m in head_convs)


def test_fused_relu_model_keeps_its_outputs() -> None:
    torch.manual_seed(0)
    model = YoloModel("yolov5n-relu-typehead-lite").eval()
    x = torch.rand(1, 3, 64, 64)
    before = model.predict(x)
    after = model.fuse().predict(x)
    assert activation_types(model) == {nn.ReLU}
    for name in before:
        assert torch.allclose(before[name], after[name], atol=1e-4), name


def test_unknown_activations_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mhyolo.cli import main
    from mhyolo.pipeline.config import load_pipeline_config
    from mhyolo.train.config import TrainConfig

    cfg = load_model_config("yolov5n")
    cfg["act"] = "gelu"
    known = r"\(known: leakyrelu, relu, silu\)"
    with pytest.raises(ConfigError, match=rf"model config: act: unknown activation 'gelu' {known}"):
        YoloModel(cfg)
    with pytest.raises(ConfigError, match="unknown activation 'Relu'"):
        TrainConfig(act="Relu")
    assert main(["train", "--data", str(tmp_path / "data.yaml"), "--act", "elu", "--out", str(tmp_path / "run")]) == 2
    assert "mhyolo train: error: act: unknown activation 'elu'" in capsys.readouterr().err
    path = tmp_path / "pipeline.yaml"
    path.write_text("recipe: recipe.yaml\nact: swish\n")
    with pytest.raises(ConfigError, match=f"{path}: act: unknown activation 'swish'"):
        load_pipeline_config(path)


def test_official_activation_names_are_read_not_evaluated() -> None:
    from mhyolo.model.weights import _official_activation

    where = Path("relu.pt")
    assert _official_activation(where, "nn.ReLU()") == "relu"
    assert _official_activation(where, "nn.LeakyReLU(0.1)") == "leakyrelu"
    assert _official_activation(where, None) == "silu"
    with pytest.raises(WeightsError, match=r"relu.pt: the model was trained with activation 'nn.Hardswish\(\)'"):
        _official_activation(where, "nn.Hardswish()")


# ----------------------------------------------------------------------------- COCO weights
def test_coco_weights_load_into_every_relu_row(official_weights: Path) -> None:
    from mhyolo.model.weights import import_official
    from mhyolo.train.state import transfer_weights

    coco = import_official(official_weights).state_dict
    relu = YoloModel("yolov5n-relu")  # the COCO layout: every one of the 349 tensors exists in both
    count, skipped = transfer_weights(relu, coco)
    assert count == len(coco) == len(relu.state_dict()) == 349 and skipped == []
    for key, value in relu.state_dict().items():
        assert torch.equal(value, coco[key]), key


def test_relu_multihead_model_takes_as_many_coco_tensors_as_the_silu_one(official_weights: Path) -> None:
    from mhyolo.train.state import build_training_model

    torch.manual_seed(0)  # the same draws for the new tensors of both builds
    silu, silu_source = build_training_model(str(official_weights), "yolov5n-typehead-lite", ["ball"], 32)
    torch.manual_seed(0)
    relu, relu_source = build_training_model(str(official_weights), "yolov5n-relu-typehead-lite", ["ball"], 32)
    assert activation_types(relu) == {nn.ReLU}
    assert relu_source == f"{silu_source}; activation silu -> relu"
    assert "343/355 tensors; new: 12" in relu_source  # new: the nc=1 Detect convs and the type head
    silu_state, relu_state = silu.state_dict(), relu.state_dict()
    assert silu_state.keys() == relu_state.keys()
    for key, value in silu_state.items():  # with the Detect rows seeded from "sports ball"
        assert torch.equal(relu_state[key], value), key
    # the same through the act override of any architecture, and a warning when a frozen part cannot adapt
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="the first 10 rows .* trained for silu but now runs with relu"):
        override, source = build_training_model(str(official_weights), "yolov5n-typehead-lite", ["ball"], 32,
                                                act="relu", frozen="the first 10 rows (freeze_layers)")
    assert source == relu_source and override.yaml == relu.yaml
    assert all(torch.equal(value, relu_state[key]) for key, value in override.state_dict().items())


def test_relu_checkpoint_rebuilds_a_relu_model(tmp_path: Path) -> None:
    from mhyolo.model.weights import load_model, save_checkpoint

    torch.manual_seed(0)
    model = YoloModel("yolov5n-typehead-lite", names=["ball"], act="relu").eval()
    loaded = load_model(save_checkpoint(tmp_path / "relu.safetensors", model))
    assert loaded.act == "relu" and activation_types(loaded) == {nn.ReLU}
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded.predict(x)["detection"], model.predict(x)["detection"])


# ----------------------------------------------------------------------------- export
def _consumers(proto) -> dict[str, list]:
    table: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            table.setdefault(name, []).append(node)
    return table


def sigmoid_mul_pairs(proto) -> list[str]:
    """Sigmoids whose output reaches a Mul, directly or through Quantize/Dequantize nodes: SiLU."""
    consumers = _consumers(proto)
    pairs = []
    for node in proto.graph.node:
        if node.op_type != "Sigmoid":
            continue
        stack = list(node.output)
        while stack:
            for user in consumers.get(stack.pop(), []):
                if user.op_type == "Mul":
                    pairs.append(node.name)
                elif user.op_type in ("QuantizeLinear", "DequantizeLinear"):
                    stack.extend(user.output)
    return pairs


def sigmoids_not_at_outputs(proto) -> list[str]:
    """Sigmoids whose output is not a graph output (the only ones the export should have)."""
    outputs = {o.name for o in proto.graph.output}
    return [n.name for n in proto.graph.node if n.op_type == "Sigmoid" and not set(n.output) <= outputs]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, official_weights: Path) -> dict[str, Path]:
    """The SiLU and ReLU multi-head models with the COCO ball rows, exported at 128."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'mhyolo[deploy]')")
    from mhyolo.deploy.onnx_export import export_onnx

    folder = tmp_path_factory.mktemp("act")
    return {name: export_onnx(sports_ball_model(official_weights, name), folder / f"{name}.onnx",
                              imgsz=EXPORT_SIZE).path
            for name in ("yolov5n-typehead-lite", "yolov5n-relu-typehead-lite")}


def test_relu_export_has_no_sigmoid_mul_and_only_output_sigmoids(exported: dict[str, Path]) -> None:
    import onnx

    silu = onnx.load(str(exported["yolov5n-typehead-lite"]))
    relu = onnx.load(str(exported["yolov5n-relu-typehead-lite"]))
    assert len(sigmoid_mul_pairs(silu)) == 57  # the check finds SiLU: one pair per Conv
    assert sigmoid_mul_pairs(relu) == []
    assert sigmoids_not_at_outputs(relu) == []
    ops = [n.op_type for n in relu.graph.node]
    assert ops.count("Sigmoid") == 6  # boxes_pN and scores_pN on three levels; types_pN stay logits
    assert ops.count("Relu") == 57 and "Mul" not in ops


def test_relu_export_runs_in_onnxruntime_like_pytorch(exported: dict[str, Path], official_weights: Path) -> None:
    from mhyolo.deploy.check import read_images, validate_export
    from mhyolo.infer.backends.onnxruntime_backend import OnnxRuntimeBackend

    images = read_images([shared_dir() / "images" / "bus.jpg", shared_dir() / "images" / "zidane.jpg"])
    model = sports_ball_model(official_weights, "yolov5n-relu-typehead-lite")
    result = validate_export(model, OnnxRuntimeBackend(exported["yolov5n-relu-typehead-lite"]), images)
    assert result.ok


def test_relu_int8_graph_has_no_sigmoid_mul_and_every_conv_int8(exported: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    from mhyolo.deploy.calibration import calibration_batches
    from mhyolo.deploy.quantize_ort import op_coverage, quantize_onnx_static

    if not SEED_BALLS.is_file():
        pytest.skip(f"shared data absent: {SEED_BALLS}")
    calib = calibration_batches(SEED_BALLS, EXPORT_SIZE, count=4, seed=0, progress=False)
    quantized = {}
    for name, path in exported.items():
        out = quantize_onnx_static(path, tmp_path / f"{name}-int8.onnx", calib, progress=False, min_sqnr_db=None)
        quantized[name] = onnx.load(str(out))
    silu, relu = quantized["yolov5n-typehead-lite"], quantized["yolov5n-relu-typehead-lite"]
    assert len(sigmoid_mul_pairs(silu)) == 57  # through Q/DQ nodes: the check sees SiLU in INT8 graphs
    assert sigmoid_mul_pairs(relu) == [] and sigmoids_not_at_outputs(relu) == []
    coverage = op_coverage(relu)
    # every Conv runs in INT8 but the three box convs (kept float on purpose); the ReLUs are folded
    # into the Convs' output ranges or run INT8, never in float between a Dequantize and a Quantize
    assert coverage.float_ops == {"Conv": 3, "Sigmoid": 6}
    assert coverage.quantized_ops["Conv"] == 63
    assert coverage.quantize_linear < op_coverage(silu).quantize_linear


# ----------------------------------------------------------------------------- pipeline
def test_pipeline_act_reaches_every_stage_and_the_plan_names_it(shared: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from mhyolo.cli import main
    from mhyolo.pipeline.config import load_pipeline_config
    from mhyolo.pipeline.stages import training_plan

    types = {name: name for name in ("basketball", "football", "tennis-ball")}
    recipe = {"classes": list(types), "seed": 0, "val_fraction": 0.25,
              "sources": [{"name": "seed", "path": str(shared / "data" / "seed_balls"), "classes": types}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    stages = {"multihead": {"enabled": True, "hyp": "multihead"}, "baseline": {"enabled": True},
              "image_head": {"enabled": True}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"recipe": "recipe.yaml", "act": "relu", **stages}))
    plan = training_plan(load_pipeline_config(path), tmp_path / "run")
    assert set(plan) == {"detector", "image_head", "head", "joint", "multihead", "baseline"}
    for name, train in plan.items():
        assert train.act == "relu", name
        assert activation_types(YoloModel(train.model, nc=1, act=train.act)) == {nn.ReLU}, name

    assert main(["pipeline", "--config", str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "# multihead: yolov5n-typehead-lite, act relu" in out and "# head: yolov5n-typehead, act relu" in out
    assert out.count("act: relu") == len(plan)

    # without `act:` every stage keeps its architecture's own activation, shown as such
    path.write_text(yaml.safe_dump({"recipe": "recipe.yaml", **stages,
                                    "multihead": {"enabled": True, "hyp": "multihead",
                                                  "overrides": {"model": "yolov5n-relu-typehead-lite"}}}))
    assert main(["pipeline", "--config", str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "# multihead: yolov5n-relu-typehead-lite, act relu" in out and "# detector: yolov5n, act silu" in out


def test_shipped_relu_demo_pipeline_plans_relu_everywhere_with_nothing_frozen() -> None:
    from mhyolo.pipeline.config import load_pipeline_config
    from mhyolo.pipeline.stages import training_plan

    demo = load_pipeline_config(CONFIGS / "pipeline" / "demo.yaml")
    relu = load_pipeline_config(CONFIGS / "pipeline" / "demo-relu.yaml")
    plan, demo_plan = training_plan(relu, Path("run")), training_plan(demo, Path("run"))
    assert list(plan) == list(demo_plan) == ["multihead"]
    train, base = plan["multihead"], demo_plan["multihead"]
    assert train.act == "relu" and base.act is None
    assert base.freeze_layers == 10 and train.freeze_layers == 0  # the SiLU backbone must adapt to ReLU
    assert train.epochs == 2 * base.epochs  # and needs longer to recover (docs/results/int8_cpu.md)
    assert (train.class_init, train.model, train.imgsz) == (base.class_init, base.model, base.imgsz)


# ----------------------------------------------------------------------------- training
def test_training_with_act_relu_saves_a_relu_model_that_resumes_as_one(shared: Path, tmp_path: Path,
                                                                      official_weights: Path) -> None:
    from helpers.tiny_data import tiny_ball_dataset
    from mhyolo.data.augment import AugmentConfig
    from mhyolo.model.weights import load_checkpoint
    from mhyolo.train.config import OptimConfig, TrainConfig
    from mhyolo.train.trainer import Trainer, resume_config

    data = tiny_ball_dataset(shared, tmp_path / "data", per_type_train=2, per_type_val=1)
    config = TrainConfig(data=str(data), weights=str(official_weights), model="yolov5n-typehead-lite", act="relu",
                         epochs=1, imgsz=EXPORT_SIZE, batch=3, workers=0, close_mosaic=0, class_init=32,
                         optim=OptimConfig(warmup_epochs=0.0, nominal_batch=3), augment=AugmentConfig(mosaic=0.0))
    summary = Trainer(config, tmp_path / "run", progress=False).run()
    best = load_checkpoint(summary.best)
    assert best.model.act == "relu" and activation_types(best.model) == {nn.ReLU}
    assert best.metadata["weights_source"].endswith("; activation silu -> relu")
    assert resume_config(tmp_path / "run").act == "relu"  # --resume rebuilds the ReLU model
