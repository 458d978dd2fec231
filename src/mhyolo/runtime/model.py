"""A model is one object: `InferenceModel` = a detector backend, its optional parts, and its input-size rule.

The parts today: the backend's own type head outputs (read by the predictor) and an optional crop
classifier typing a one-class detector's boxes (the two-stage model). The input-size rule: an
exported graph runs at the size it was made for, a model that takes any shape at the asked size,
else at the size it was trained at; `"native"` runs each image at its own long side
(`infer.input_size.NativeSize`). Where nothing is asked for (no size, no slicing, no scales; for
scoring, no `type_min_score`), a model that takes any shape runs the default rule
(`infer.default_rule`): the training size and each image's own size, merged by ball size.

Both front doors (`mhyolo.load(...)` -> `api.Model`, and the `predict` / `val` commands) load a
model here and ask it for a predictor (`predictor`) or for the figures of a dataset split
(`score`); the commands only parse arguments. The predictor itself is put together by
`infer.assemble.build_predictor`, which scoring uses as well.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mhyolo.infer.assemble import InferenceSettings, build_predictor

if TYPE_CHECKING:
    from mhyolo.data.spec import DataSpec
    from mhyolo.eval.validate import ValidationResult
    from mhyolo.infer.input_size import NativeSize

# the check of `predictor` in the command line's words (`api.Model.predict` passes its keywords' words)
NATIVE_CONFLICT = "--imgsz native combines with neither --slice nor --scales: choose one"


class InferenceModel:
    """A loaded detector `backend` (any runtime) with an optional crop `classifier` behind it."""

    def __init__(self, backend: Any, classifier: Any = None, path: str | Path | None = None) -> None:
        if classifier is not None:
            from mhyolo.infer.crop_types import check_detector

            check_detector(backend, classifier)
        self.backend = backend
        self.classifier = classifier
        self.path = Path(path) if path is not None else None

    @classmethod
    def load(cls, weights: str | Path, device: Any = "cpu", classifier: str | Path | None = None,
             runtime: str | None = None, threads: int | None = None, npu_cores: str = "auto",
             precision: str | None = "auto") -> InferenceModel:
        """Any model file mhyolo reads (`runtime.load.load_backend`) and, with `classifier`, the crop
        classifier (`.safetensors` or `.onnx`) that types its boxes, checked to fit the detector. A
        PyTorch model is only run here: it takes its inference form (`YoloModel.for_inference`);
        `precision` is OpenVINO's (`defaults.OPENVINO_PRECISIONS`)."""
        from mhyolo.runtime.load import load_backend

        backend = load_backend(weights, device=device, runtime=runtime, precision=precision, threads=threads,
                               npu_cores=npu_cores, inference_only=True)
        crop_classifier = None
        if classifier is not None:
            from mhyolo.classify.backend import load_classifier

            crop_classifier = load_classifier(classifier, device=device, threads=threads)
        return cls(backend, crop_classifier, weights)

    @property
    def names(self) -> list[str]:
        """Detector class names."""
        return list(self.backend.names)

    @property
    def type_names(self) -> list[str] | None:
        """Type names of the crop classifier or the type head, None for a detector without either."""
        if self.classifier is not None:
            return list(self.classifier.names)
        names = getattr(self.backend, "type_names", None)
        return list(names) if names else None

    @property
    def imgsz(self) -> int:
        """The input size used when none is asked for: an export's fixed size, else the training size."""
        from mhyolo.runtime.load import input_size

        return input_size(self.backend, None)

    def input_rule(self, imgsz: int | str | None) -> tuple[int, NativeSize | None]:
        """(the input size, the `NativeSize` rule or None) for an asked `imgsz` (pixels, `"native"` or None)."""
        from mhyolo.runtime.load import input_rule

        return input_rule(self.backend, imgsz)

    def with_default_rule(self, settings: InferenceSettings, imgsz: int | str | None,
                          allowed: bool = True) -> InferenceSettings:
        """`settings` with the default scales (`infer.default_rule`) where nothing else was asked for."""
        from mhyolo.infer.default_rule import default_scales
        from mhyolo.infer.predictor import accepts_any_shape

        scales = default_scales(accepts_any_shape(self.backend), imgsz, settings.whole_images, allowed)
        return settings if scales is None else replace(settings, scales=scales)

    def predictor(self, settings: InferenceSettings, imgsz: int | str | None = None,
                  native_conflict: str = NATIVE_CONFLICT, on_base: Any = None) -> Any:
        """What runs this model on BGR images (`.predict(images)` -> `Prediction`s): the input-size rule
        applied to `imgsz` (the default rule where nothing is asked for), then `build_predictor`.
        `native_conflict` is the error for native with slicing or scales; `on_base` as `build_predictor`
        takes it."""
        from mhyolo.errors import ConfigError

        size, native = self.input_rule(imgsz)
        if native is not None and not settings.whole_images:
            raise ConfigError(native_conflict)
        return build_predictor(self.backend, size, self.with_default_rule(settings, imgsz), classifier=self.classifier,
                               native=native, on_base=on_base)

    def score(self, spec: DataSpec, split: str, settings: InferenceSettings, imgsz: int | str | None = None,
              type_min_score: float | None = None, progress: bool = True) -> ValidationResult:
        """Precision, recall, mAP (per ball size, and type figures when the boxes are typed) on a split of
        `spec`, images run as `settings` say (`rect` aside: scoring letterboxes as training did), the
        input-size rule as in `predictor` (the default rule only without `type_min_score` too)."""
        from mhyolo.eval.validate import score_split

        size, native = self.input_rule(imgsz)
        settings = self.with_default_rule(settings, imgsz, allowed=type_min_score is None)
        if self.classifier is not None:  # the two-stage model: its types must be the dataset's
            from mhyolo.infer.crop_types import check_types_match
            from mhyolo.classify.data import type_names

            check_types_match(self.classifier, type_names(spec), str(spec.yaml_path))
        return score_split(self.backend, spec, size, split, progress=progress, batch_size=settings.batch_size,
                           conf=settings.conf, iou=settings.iou, max_det=settings.max_det,
                           slicing=settings.slicing, scales=settings.scales, native=native,
                           classifier=self.classifier,
                           **({"type_min_score": type_min_score} if type_min_score is not None else {}))
