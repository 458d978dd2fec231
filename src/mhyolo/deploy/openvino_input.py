"""An OpenVINO IR that takes the letterboxed image itself: uint8 BGR HWC, as `letterbox` gives it.

Our float input (RGB NCHW in [0, 1]) costs twice outside the graph and once inside it: NumPy turns
the uint8 letterbox into floats (channel flip, transpose, /255), and the INT8 IR's first node
quantizes those floats back to u8 (its FakeQuantize and the f32 -> u8 reorder, 3-9 % of the INT8
call at 320). Here `openvino.preprocess.PrePostProcessor` writes that conversion into the graph
(u8 NHWC BGR tensor -> f32 -> RGB -> x 1/255 -> NCHW), in front of the first FakeQuantize, where the CPU plugin merges it
with the input's quantization. The metadata records the new input (`ExportMetadata.input_kind`),
and every consumer asks the backend for it (`infer.preprocess.model_input`), so a float IR is fed
as before.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mhyolo.infer.layout import FLOAT_RGB_NCHW, METADATA_KEY, UINT8_BGR_NHWC, ExportMetadata
from mhyolo.errors import ConfigError, MhyoloError


def exact_input_quantization(model, input_name: str) -> int:
    """Set the 256-level FakeQuantize nodes that read the image to the range [0, 1]; how many.

    Calibration gives a range a little short of it (e.g. [0, 0.995]), which rounds every pixel
    onto a grid of its own. With [0, 1] each pixel k/255 is exactly level k, so the quantization
    loses nothing, and once the input is uint8 it is the identity, which the CPU plugin drops
    (with the calibrated range it runs a u8 -> u8 requantization of the whole image)."""
    import numpy as np
    import openvino as ov

    parameter = next(p for p in model.get_parameters() if input_name in p.output(0).get_names())
    changed = 0
    for target in parameter.output(0).get_target_inputs():
        node = target.get_node()
        if node.get_type_name() != "FakeQuantize" or node.get_attributes().get("levels") != 256:
            continue
        for port, value in ((1, 0.0), (2, 1.0), (3, 0.0), (4, 1.0)):
            node.input(port).replace_source_output(ov.op.Constant(np.array(value, np.float32)).output(0))
        changed += 1
    return changed


def uint8_input(model, meta: ExportMetadata, source: str = "model"):
    """(model, metadata) of `model` (a float-input mhyolo graph, `ov.Model`) taking uint8 BGR NHWC."""
    try:
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor
    except ImportError as exc:
        raise MhyoloError("the uint8 input needs 'openvino' (pip install 'mhyolo[deploy]')") from exc
    if meta.input_kind != FLOAT_RGB_NCHW:
        raise ConfigError(f"{source}: its input is already {meta.input_kind}")
    model = model.clone()  # the caller's model keeps its float input
    exact_input_quantization(model, meta.input_name)
    ppp = PrePostProcessor(model)
    item = ppp.input(meta.input_name)
    item.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    item.model().set_layout(ov.Layout("NCHW"))
    item.preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(255.0)
    try:
        built = ppp.build()
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises generic RuntimeErrors
        raise MhyoloError(f"{source}: OpenVINO cannot add the uint8 input: {exc}") from exc
    new_meta = replace(meta, input_kind=UINT8_BGR_NHWC, extra=dict(meta.extra),
                       input_format="uint8 BGR NHWC (0-255), letterboxed with grey 114")
    return built, new_meta


def save_uint8_input(xml: str | Path, out_xml: str | Path) -> Path:
    """Write the mhyolo IR `xml` (FP32 or INT8, float input) again at `out_xml`, taking uint8 BGR NHWC:
    an INT8 IR gets the new input without being calibrated again."""
    import openvino as ov

    from mhyolo.deploy.openvino_model import read_model_and_metadata

    xml, out_xml = Path(xml), Path(out_xml)
    if xml.suffix.lower() != ".xml":
        raise ConfigError(f"{xml}: the uint8 input is written into an OpenVINO IR (.xml); export one first")
    model, meta = read_model_and_metadata(xml)
    model, meta = uint8_input(model, meta, str(xml))
    model.set_rt_info(meta.to_json(), [METADATA_KEY])
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out_xml), compress_to_fp16=False)
    return out_xml
