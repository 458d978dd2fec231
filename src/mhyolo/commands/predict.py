"""`mhyolo predict`: detect (and type) objects in an image, a folder or a video.

Annotated copies go under `--out` with the same file names (a video becomes an
annotated `.mp4`; `--no-images` with `--json` skips drawing and writing them); `--json` prints one
JSON object per image on stdout, while the progress bar and messages go to stderr so stdout can be
piped as JSON lines.
Exit code: 0 when every image was read, 1 when some could not be, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from mhyolo.commands.inference_args import add_slice_arguments, slice_settings
from mhyolo.commands.scale_args import add_multiscale_arguments, multiscale_settings
from mhyolo.defaults import OPENVINO_PRECISIONS as PRECISIONS, PREDICT_CONF
from mhyolo.errors import ConfigError, MhyoloError
from mhyolo.infer.input_size import imgsz_arg

if TYPE_CHECKING:  # heavy imports stay out of `mhyolo --help`
    from mhyolo.infer.predictor import Prediction
    from mhyolo.infer.sources import Frame


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="detect objects in images, a folder or a video",
        description="Run a model on an image, a folder of images or a video; write annotated copies "
                    "and optionally JSON lines (stdout).")
    parser.add_argument("source", help="image file, folder of images, or video file")
    parser.add_argument("--weights", required=True,
                        help="checkpoint: official YOLOv5 .pt or mhyolo .safetensors (bare names are looked up "
                             "in the weights cache and ../shared/weights), or an exported .onnx (ONNX Runtime) "
                             "or OpenVINO .xml")
    parser.add_argument("--imgsz", type=imgsz_arg, default=None,
                        help="network input size: a number, or 'native': each image at its own long side, kept within "
                             "[the size the model was trained at, 1280] (finds small objects in large frames). "
                             "Default, for a model that takes any input size (without --slice / --scales): each image "
                             "at the size the model was trained at and at its own size, boxes merged by ball size "
                             "(large balls from the first, small ones from the second); the size an exported model "
                             "was made for otherwise")
    parser.add_argument("--conf", type=float, default=PREDICT_CONF, help=f"score threshold (default: {PREDICT_CONF})")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default: 0.45)")
    parser.add_argument("--max-det", type=int, default=300, help="at most this many boxes per image (default: 300)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="images per forward pass (default: 1; above 1 replaces the throughput mode)")
    parser.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=True,
                        help="on a folder or a video, keep several frames in flight: model calls overlapped with "
                             "reading, letterboxing and post-processing; the same results, in order (default: on; "
                             "not with --slice or --batch-size above 1)")
    parser.add_argument("--streams", type=int, metavar="N",
                        help="throughput mode: model calls in flight (default: the runtime's choice; OpenVINO's "
                             "throughput hint, 2 elsewhere)")
    parser.add_argument("--track", action="store_true",
                        help="on a video or a folder of frames, give each box the id of the ball track it joins "
                             "(`track` in the JSON, `#id` on the drawn label), decided frame by frame; "
                             "`mhyolo track` adds re-detection, gap filling, speeds and trails")
    parser.add_argument("--balls", choices=("one", "many"), default="one",
                        help="--track: one ball at a time (default) or several at once")
    add_slice_arguments(parser)
    add_multiscale_arguments(parser)
    parser.add_argument("--square", action="store_true",
                        help="square inputs (imgsz x imgsz) instead of rectangular ones (long side imgsz, the "
                             "short side padded only to the stride); exported graphs always take their square")
    parser.add_argument("--out", default="runs/predict", help="folder for annotated outputs (default: runs/predict)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image on stdout")
    parser.add_argument("--no-images", action="store_true",
                        help="with --json: draw and write no annotated images or video (the JSON lines only; "
                             "faster where drawing and encoding cost more than the model)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    parser.add_argument("--ov-precision", choices=PRECISIONS, default="auto",
                        help="OpenVINO's arithmetic on the CPU: auto (f32 for a float model, the plugin's default "
                             "for INT8), f32, bf16 (faster on CPUs with AVX-512 BF16 or AMX, which is what OpenVINO "
                             "itself picks there) or f16 (default: auto)")
    parser.add_argument("--npu-cores", default="auto", metavar="CORES",
                        help="a .rknn on a Rockchip board (rknn-toolkit-lite2): the NPU cores of each call, auto (the "
                             "driver's choice), 0, 1, 2 or all (default: auto; the x86 simulator has none)")
    parser.add_argument("--classifier", help="crop classifier (.safetensors from `mhyolo classify train`, or its "
                                             ".onnx) typing each box of the one-class --weights: the two-stage model")
    parser.set_defaults(func=run)


def _device(name: str):
    """The torch device a PyTorch model runs on; the CPU needs no PyTorch (exported models in the runtime
    install)."""
    if name == "cpu":
        return name
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _VideoOut:
    """An `.mp4` writer opened on the first frame, when the frame size is known."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.writer = path, fps, None

    def write(self, image) -> None:
        import cv2

        if self.writer is None:
            height, width = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self.writer.isOpened():
                raise MhyoloError(f"{self.path}: cannot open a video writer")
        self.writer.write(image)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class _OrderedWriter:
    """Draws and writes annotated frames on one worker thread (OpenCV releases the GIL while it encodes),
    so the next frames' model calls overlap the writing; `done` hears of each frame in input order,
    once its copy is written. At most `ahead` frames wait, which bounds the images held in memory."""

    def __init__(self, write: Callable[[Frame, Prediction], bool],
                 done: Callable[[Frame, Prediction, bool], None], ahead: int = 4) -> None:
        self.write, self.done, self.ahead = write, done, ahead
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mhyolo-write")  # one worker: frames stay in order
        self.pending: deque[tuple[Frame, Prediction, Future]] = deque()

    def submit(self, frame: Frame, prediction: Prediction) -> None:
        self.pending.append((frame, prediction, self.pool.submit(self.write, frame, prediction)))
        while self.pending and (self.pending[0][2].done() or len(self.pending) > self.ahead):
            self._finish_first()

    def drain(self) -> None:
        """Wait for every frame submitted so far."""
        while self.pending:
            self._finish_first()

    def _finish_first(self) -> None:
        frame, prediction, future = self.pending.popleft()
        self.done(frame, prediction, future.result())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _online_tracks(balls: str):
    """`--track`: the online track ids of each frame's boxes (`track.online`)."""
    from mhyolo.track.online import OnlineTrackIds
    from mhyolo.track.run import TrackSettings

    return OnlineTrackIds(TrackSettings(many=balls == "many"))


def _predict(predictor, frames: list[Frame], sliced: bool) -> list:
    """Predictions for the readable frames. Sliced, one frame at a time (tiles are per image), so
    an image the tile does not fit is named in the error."""
    if not sliced:
        return predictor.predict([frame.image for frame in frames]) if frames else []
    out = []
    for frame in frames:
        try:
            out.extend(predictor.predict([frame.image]))
        except ConfigError as exc:
            raise ConfigError(f"{frame.path}: {exc}") from exc
    return out


def run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from mhyolo.infer.assemble import InferenceSettings
    from mhyolo.infer.draw import draw_predictions
    from mhyolo.runtime.model import InferenceModel
    from mhyolo.infer.sources import open_source

    if args.max_det < 1:
        raise ConfigError(f"--max-det must be at least 1, got {args.max_det}")
    if args.streams is not None and args.streams < 1:
        raise ConfigError(f"--streams must be at least 1, got {args.streams}")
    for flag, value in (("--conf", args.conf), ("--iou", args.iou)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{flag} must be between 0 and 1, got {value}")
    if args.no_images and not args.json:
        raise ConfigError("--no-images leaves nothing to write without --json: add --json, or drop --no-images")
    slicing = slice_settings(args)
    scaled = multiscale_settings(args)
    source = open_source(args.source)
    device = _device(args.device)
    model = InferenceModel.load(args.weights, device=device, classifier=args.classifier, npu_cores=args.npu_cores,
                                precision=args.ov_precision)

    def square_note(base) -> None:
        if base.square_fallback:
            print(f"mhyolo predict: {args.weights} has a fixed {base.imgsz}x{base.imgsz} input: square inputs, "
                  "not rectangular ones", file=sys.stderr)

    settings = InferenceSettings(conf=args.conf, iou=args.iou, max_det=args.max_det, batch_size=args.batch_size,
                                 rect=not args.square, slicing=slicing, scales=scaled[0] if scaled else None)
    predictor = model.predictor(settings, args.imgsz, on_base=square_note)
    if scaled:
        print(f"mhyolo predict: scales {predictor.describe()}", file=sys.stderr)
    elif model.with_default_rule(settings, args.imgsz).scales is not None:
        print(f"mhyolo predict: {predictor.describe()} (the default; --imgsz N runs one size)", file=sys.stderr)

    out_dir = Path(args.out)
    images = not args.no_images
    if images:
        out_dir.mkdir(parents=True, exist_ok=True)
    video_out = _VideoOut(out_dir / f"{source.path.stem}.mp4", source.fps) if source.is_video and images else None
    counts = {"done": 0, "failed": 0}
    bar = tqdm(total=len(source) or None, unit="frame" if source.is_video else "image", file=sys.stderr,
               disable=not source.is_video and len(source) <= 1, dynamic_ncols=True)

    def write_annotated(frame: Frame, prediction: Prediction) -> bool:
        """The frame with its boxes drawn, into the video or as an image file; False when it cannot be written."""
        annotated = draw_predictions(frame.image, prediction)
        if video_out is not None:
            video_out.write(annotated)
            return True
        return bool(cv2.imwrite(str(out_dir / frame.name), annotated))

    def report(frame: Frame, prediction: Prediction, written: bool) -> None:
        """Count one predicted frame (and print its JSON line) once its annotated copy is written."""
        if not written:
            counts["failed"] += 1
            tqdm.write(f"mhyolo predict: {out_dir / frame.name}: cannot write the annotated image", file=sys.stderr)
            return
        if args.json:
            print(json.dumps(prediction.to_json(frame.name)), flush=True)
        counts["done"] += 1

    writer = _OrderedWriter(write_annotated, report) if images else None
    track_ids = _online_tracks(args.balls) if args.track else None

    def emit(frame: Frame, prediction: Prediction | None) -> None:
        """Write one frame's result (or report why it has none) and count it."""
        if track_ids is not None:
            prediction = track_ids(prediction)  # every frame, in order: an unread one is a frame without a ball
        if prediction is None:
            if writer is not None:
                writer.drain()  # the lines of earlier frames first
            counts["failed"] += 1
            tqdm.write(f"mhyolo predict: {frame.path}: {frame.error}", file=sys.stderr)
            return
        if writer is not None:
            writer.submit(frame, prediction)
        else:
            report(frame, prediction, True)

    streaming = (args.throughput and slicing is None and args.batch_size == 1
                 and (source.is_video or len(source) > 1))
    try:
        if streaming:
            from mhyolo.infer.stream import StreamPredictor

            with StreamPredictor(predictor, args.streams) as stream:
                for frame, prediction in stream.predict((frame, frame.image if frame.ok else None)
                                                        for frame in source):
                    emit(frame, prediction)
                    bar.update(1)
        else:
            for batch in _batches(source, args.batch_size):
                good = [frame for frame in batch if frame.ok]
                for frame in batch:
                    if not frame.ok:
                        emit(frame, None)
                for frame, prediction in zip(good, _predict(predictor, good, sliced=slicing is not None)):
                    emit(frame, prediction)
                bar.update(len(batch))
        if writer is not None:
            writer.drain()
    finally:
        if writer is not None:
            writer.close()
        bar.close()
        if video_out is not None:
            video_out.close()
    done, failed = counts["done"], counts["failed"]
    where = video_out.path if video_out is not None else out_dir if images else "the JSON lines (stdout)"
    unit = "frame" if source.is_video else "image"
    print(f"{done} {unit}{'' if done == 1 else 's'} predicted, {failed} failed; results in {where}", file=sys.stderr)
    return 1 if failed else 0
