"""Throughput mode: the frames of a folder or a video predicted with the model calls overlapped.

One image at a time, the cores wait while Python letterboxes, decodes and draws, and a batch-1
model call rarely keeps every core busy. Here several model calls are in flight (`ModelCalls`)
while the calling thread letterboxes the next frames and post-processes the finished ones, in
input order. Each frame still gets its own batch-1 call and the same post-processing, so the
predictions are those of the sequential path. A multi-scale predictor's frame is several calls
(one per scale and mirror, `frame_passes`), all in flight together and merged as its `predict`
merges them (`combine`).

How calls overlap depends on the runtime; each way is a class registered with
`register_model_calls`, asked in priority order (a runtime's backend class names its way in its
`throughput` attribute):

* `openvino`: OpenVINO's own asynchronous infer requests (`AsyncInferQueue`) on the model compiled
  with the throughput hint, which splits the cores into streams;
* `threads`: worker threads calling ONNX Runtime or the PyTorch model (both release the GIL while
  they compute);
* `inline`: anything else (e.g. the RKNN simulator) is called in turn.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from mhyolo.errors import ConfigError
from mhyolo.infer.inference import Inference
from mhyolo.infer.predictor import FramePass, Prediction, Predictor

DEFAULT_STREAMS = 2  # calls in flight where the runtime does not choose (ONNX Runtime, PyTorch)
Item = TypeVar("Item")


class ModelCalls(ABC):
    """Model calls in flight: `submit` an input batch, get a future of `Inference.call`'s result."""

    key: ClassVar[str] = ""
    priority: ClassVar[int] = 100  # lower is asked first

    def __init__(self, inference: Inference, streams: int | None = None) -> None:
        self.inference = inference
        self.streams = streams or DEFAULT_STREAMS

    @classmethod
    @abstractmethod
    def applies(cls, backend: Any) -> bool:
        """Whether calls of `backend` can overlap this way."""

    @abstractmethod
    def submit(self, x: np.ndarray) -> Future:
        """Start the model call on `x`; the future holds what `Inference.call` returns."""

    def close(self) -> None:
        """Wait for the calls in flight and free what they hold."""

    @property
    def description(self) -> str:
        return f"{self.streams} {self.key}"


MODEL_CALLS: dict[str, type[ModelCalls]] = {}


def register_model_calls(cls: type[ModelCalls]) -> type[ModelCalls]:
    """Class decorator: make a way of overlapping calls available under its `key`."""
    if not cls.key:
        raise ValueError(f"{cls.__name__} needs a key")
    MODEL_CALLS[cls.key] = cls
    return cls


def model_calls(inference: Inference, streams: int | None = None) -> ModelCalls:
    """The first registered way (by priority) that applies to the inference's backend."""
    if streams is not None and streams < 1:
        raise ConfigError(f"streams must be at least 1, got {streams}")
    for cls in sorted(MODEL_CALLS.values(), key=lambda c: (c.priority, c.key)):
        if cls.applies(inference.backend):
            return cls(inference, streams)
    raise ConfigError(f"no way to run {type(inference.backend).__name__} in throughput mode")


@register_model_calls
class OpenVinoRequests(ModelCalls):
    """OpenVINO's asynchronous infer requests on the model compiled for throughput: the plugin runs
    one request per stream, each on its share of the cores. With `streams` unset the plugin chooses."""

    key = "openvino"
    priority = 10

    def __init__(self, inference: Inference, streams: int | None = None) -> None:
        from openvino import AsyncInferQueue

        backend = inference.backend
        self.compiled = backend.compile_for_throughput(streams)
        requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        super().__init__(inference, streams or requests)
        self.names = [output.get_any_name() for output in self.compiled.outputs]
        self.input_name = backend.metadata.input_name
        self.queue = AsyncInferQueue(self.compiled, max(requests, self.streams))
        self.queue.set_callback(self._done)

    @classmethod
    def applies(cls, backend: Any) -> bool:
        return getattr(backend, "throughput", None) == cls.key

    def _done(self, request: Any, future: Future) -> None:
        """Runs in an OpenVINO thread: copy the outputs out before the request is reused."""
        try:
            future.set_result({name: np.array(request.get_output_tensor(i).data)
                               for i, name in enumerate(self.names)})
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits for this frame
            future.set_exception(exc)

    def submit(self, x: np.ndarray) -> Future:
        future: Future = Future()
        array = self.inference.backend.checked_input(x)
        if array.shape[0] != 1:
            raise ConfigError("throughput mode runs one image per call")
        self.queue.start_async({self.input_name: array}, future)
        return future

    def close(self) -> None:
        self.queue.wait_all()

    @property
    def description(self) -> str:
        return f"OpenVINO async, {self.streams} requests (throughput hint)"


@register_model_calls
class ThreadedCalls(ModelCalls):
    """Worker threads, one model call each: ONNX Runtime sessions and PyTorch modules may be called
    from several threads at once, and neither holds the GIL while it computes."""

    key = "threads"
    priority = 20

    def __init__(self, inference: Inference, streams: int | None = None) -> None:
        super().__init__(inference, streams)
        self.pool = ThreadPoolExecutor(self.streams, thread_name_prefix="mhyolo-call")

    @classmethod
    def applies(cls, backend: Any) -> bool:
        from mhyolo.infer.levels import ModelLevels

        return getattr(backend, "throughput", None) == cls.key or ModelLevels.applies(backend)

    def submit(self, x: np.ndarray) -> Future:
        return self.pool.submit(self.inference.call, x)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    @property
    def description(self) -> str:
        return f"{self.streams} threads"


@register_model_calls
class InlineCalls(ModelCalls):
    """Any other backend, called in turn in the calling thread (nothing overlaps)."""

    key = "inline"
    priority = 1000

    def __init__(self, inference: Inference, streams: int | None = None) -> None:
        super().__init__(inference, 1)

    @classmethod
    def applies(cls, backend: Any) -> bool:
        return True

    def submit(self, x: np.ndarray) -> Future:
        future: Future = Future()
        future.set_result(self.inference.call(x))
        return future

    @property
    def description(self) -> str:
        return "in turn (no overlap for this runtime)"


class Streamable(Protocol):
    """What throughput mode runs: a `Predictor`, or a wrapper (`MultiScalePredictor`) whose frames
    are several model calls of one shared `Inference`, combined into one prediction per frame."""

    inference: Inference
    batch_size: int

    def frame_passes(self, image: np.ndarray) -> list[FramePass]: ...

    def combine(self, image: np.ndarray, predictions: Sequence[Prediction]) -> Prediction: ...


@dataclass
class _Call:
    """One pass of a frame in flight: its letterboxed call (a future) or a prediction made already."""

    frame_pass: FramePass
    future: Future | None = None
    infos: Any = None

    def prediction(self) -> Prediction:
        if self.frame_pass.done is not None:
            return self.frame_pass.done
        predictor = self.frame_pass.predictor
        return predictor.finish(self.future.result(), [self.frame_pass.image], self.infos)[0]


class StreamPredictor:
    """A `Predictor` (or a multi-scale one) over a stream of frames, model calls overlapped: results in
    input order, the same as `predict` one frame at a time."""

    def __init__(self, predictor: Streamable, streams: int | None = None) -> None:
        if predictor.batch_size != 1:
            raise ConfigError("throughput mode calls the model on one image at a time (batch size 1)")
        self.predictor = predictor
        self.calls = model_calls(predictor.inference, streams)
        self.depth = 2 * self.calls.streams  # frames in flight: the calls, plus as many waiting their turn

    @property
    def description(self) -> str:
        return self.calls.description

    def predict(self, items: Iterable[tuple[Item, np.ndarray | None]]) -> Iterator[tuple[Item, Prediction | None]]:
        """(key, BGR image) pairs -> (key, prediction) in the same order; a None image (a frame that
        could not be read) passes through with a None prediction. One stream at a time per predictor."""
        window: deque[tuple[Item, np.ndarray | None, list[_Call] | None]] = deque()
        for key, image in items:
            if image is None:
                window.append((key, None, None))
            else:
                Predictor.check_images([image])
                window.append((key, image, [self._start(frame_pass)
                                            for frame_pass in self.predictor.frame_passes(image)]))
            while len(window) > self.depth or (window and window[0][2] is None):
                yield self._finish(window.popleft())
        while window:
            yield self._finish(window.popleft())

    def _start(self, frame_pass: FramePass) -> _Call:
        if frame_pass.done is not None:
            return _Call(frame_pass)
        x, infos = frame_pass.predictor.prepare([frame_pass.image])
        return _Call(frame_pass, self.calls.submit(x), infos)

    def _finish(self, entry: tuple[Item, np.ndarray | None, list[_Call] | None]) -> tuple[Item, Prediction | None]:
        key, image, calls = entry
        if calls is None:
            return key, None
        return key, self.predictor.combine(image, [call.prediction() for call in calls])

    def close(self) -> None:
        self.calls.close()

    def __enter__(self) -> StreamPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
