"""The RKNN-Lite backend (`deploy.rknn_lite`): a `.rknn` on a Rockchip board's NPU.

No board here: `rknnlite.api` is replaced at its own boundary (`RKNNLite.load_rknn`, `init_runtime`,
`inference`). Without the RKNN environment, the checks are the core masks, the errors and the
choice of backend; with it (`make rknn-env`), the stand-in's `inference()` answers with the
rknn-toolkit2 simulator's real outputs for the same `.rknn`, and the board backend's letterbox,
input bytes, output order, decoding, NMS and types must give the simulator backend's predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from test_rknn import IMAGES, converted, needs_rknn, needs_shared  # noqa: F401 - `converted` is a fixture

from mhyolo.defaults import NPU_CORE_WORDS
from mhyolo.deploy import rknn as rk
from mhyolo.deploy.formats import LoadOptions
from mhyolo.infer.layout import ExportMetadata
from mhyolo.deploy.rknn_lite import NPU_CORES, RknnLiteBackend, core_mask, on_board
from mhyolo.errors import ConfigError, MhyoloError, WeightsError


def stand_in(answer, load_ret: int = 0) -> SimpleNamespace:
    """An `rknnlite.api` whose `RKNNLite.inference` returns `answer(image)` and records its calls."""

    class RKNNLite:
        NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2, NPU_CORE_0_1_2 = 0, 1, 2, 4, 7
        made: list = []

        def __init__(self, verbose: bool = False) -> None:
            self.calls: list = []
            self.released = False
            RKNNLite.made.append(self)

        def load_rknn(self, path: str) -> int:
            self.path = path
            return load_ret

        def init_runtime(self, core_mask: int) -> int:
            self.core_mask = core_mask
            return 0

        def inference(self, inputs: list, data_format: str) -> list:
            self.calls.append((inputs[0].dtype, inputs[0].shape, data_format))
            return answer(inputs[0])

        def release(self) -> None:
            self.released = True

    return SimpleNamespace(RKNNLite=RKNNLite)


@pytest.fixture
def sidecar_only(tmp_path: Path) -> Path:
    """A `.rknn` with the sidecar a conversion writes (its model bytes are never read here)."""
    model = tmp_path / "ball.rknn"
    model.write_bytes(b"RKNN")
    meta = json.loads(ExportMetadata(names=["ball"], strides=[8.0, 16.0, 32.0], imgsz=64, anchors_px=[
        [[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]).to_json())
    (tmp_path / "ball.rknn.json").write_text(json.dumps({"sidecar_version": rk.SIDECAR_VERSION, "mhyolo": meta}))
    return model


def test_each_core_word_picks_its_mask_and_a_bad_word_is_named() -> None:
    api = stand_in(lambda image: [])
    assert [core_mask(api, word) for word in ("auto", "0", "1", "2", "all", " ALL ")] == [0, 1, 2, 4, 7, 7]
    assert list(NPU_CORES) == list(NPU_CORE_WORDS)
    with pytest.raises(ConfigError, match="--npu-cores '3'"):
        core_mask(api, "3")
    with pytest.raises(ConfigError, match="--npu-cores 'both'"):
        LoadOptions(npu_cores="both")


def test_the_board_backend_loads_asks_its_cores_and_releases(sidecar_only: Path) -> None:
    answers = lambda image: [np.zeros((1, 3, s, s, 4), np.float32) if k == "boxes" else  # noqa: E731
                             np.zeros((1, 3, s, s, 2), np.float32) for s in (8, 4, 2) for k in ("boxes", "scores")]
    api = stand_in(answers)
    backend = RknnLiteBackend(sidecar_only, npu_cores="all", api=api)
    runtime = api.RKNNLite.made[-1]
    assert runtime.path == str(sidecar_only) and runtime.core_mask == 7
    assert backend.output_names == ["boxes_p3", "scores_p3", "boxes_p4", "scores_p4", "boxes_p5", "scores_p5"]
    outputs = backend.run(np.full((2, 3, 64, 64), 0.5, np.float32))  # two images: two NPU calls
    assert runtime.calls == [(np.uint8, (1, 64, 64, 3), "nhwc")] * 2
    assert outputs["scores_p5"].shape == (2, 3, 2, 2, 2)
    backend.close()
    assert runtime.released and backend.runtime is None
    with pytest.raises(MhyoloError, match="released"):
        backend.run(np.zeros((1, 3, 64, 64), np.float32))


def test_failures_name_the_file_and_the_step(sidecar_only: Path, tmp_path: Path) -> None:
    with pytest.raises(MhyoloError, match=r"ball.rknn: RKNNLite load_rknn failed \(returned -1\)"):
        RknnLiteBackend(sidecar_only, api=stand_in(lambda image: [], load_ret=-1))
    short = RknnLiteBackend(sidecar_only, api=stand_in(lambda image: [np.zeros(1)]))
    with pytest.raises(MhyoloError, match="returned 1 outputs, expected 6"):
        short.run(np.zeros((1, 3, 64, 64), np.float32))
    bare = tmp_path / "bare.rknn"
    bare.write_bytes(b"RKNN")
    with pytest.raises(WeightsError, match="no bare.rknn.json beside it"):
        RknnLiteBackend(bare, api=stand_in(lambda image: []))


def test_a_pc_runs_rknn_files_in_the_simulator(monkeypatch) -> None:
    import platform

    assert not on_board() or platform.machine().lower() in ("aarch64", "arm64")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert not on_board()


@pytest.mark.rknn
@needs_rknn
@needs_shared
def test_the_board_backend_predicts_what_the_simulator_predicts(converted) -> None:  # noqa: F811
    from mhyolo.infer.predictor import Predictor

    simulator = rk.RknnSimulatorBackend(converted["rknn"])
    graph_order = rk._output_names(converted["onnx"])
    try:
        def answer(image: np.ndarray) -> list:  # the NPU's outputs, in the graph's order
            _, outputs = simulator.worker.request("infer", {"images": image})
            return [outputs[name] for name in graph_order]

        api = stand_in(answer)
        board = RknnLiteBackend(converted["rknn"], npu_cores="0", api=api)
        images = [cv2.imread(str(p)) for p in IMAGES]
        expected = Predictor(simulator, imgsz=160, conf=0.25).predict(images)
        got = Predictor(board, imgsz=160, conf=0.25).predict(images)
    finally:
        simulator.close()
    assert sum(len(p) for p in expected) >= 2
    assert [json.dumps(p.to_json("x")) for p in got] == [json.dumps(p.to_json("x")) for p in expected]
    assert api.RKNNLite.made[-1].core_mask == 1 and len(api.RKNNLite.made[-1].calls) == len(images)


@pytest.mark.rknn
@needs_rknn
@needs_shared
def test_the_board_script_prints_a_row_per_core_setting(converted, tmp_path: Path) -> None:  # noqa: F811
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "board.py"
    refused = subprocess.run([sys.executable, str(script), str(converted["rknn"]), str(IMAGES[0].parent)],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "not a Rockchip board" in refused.stderr  # off a board: no NPU times
    done = subprocess.run([sys.executable, str(script), str(converted["rknn"]), str(IMAGES[0].parent), "--simulator",
                           "--npu-cores", "auto", "all", "--runs", "2", "--warmup", "0", "--frames", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| auto") or line.startswith("| all")]
    assert len(rows) == 2 and all(len(row.split("|")) == 9 for row in rows), done.stdout
    assert "x86 simulator: not NPU speed" in done.stdout
