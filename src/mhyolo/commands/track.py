"""`mhyolo track`: the ball's trajectory through a video or a folder of frames: detections linked into
tracks, re-detection in a native-resolution window where a track expects the ball, gaps filled, speeds
and candidate bounces; scored against per-frame ball positions with `--eval`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mhyolo.errors import ConfigError
from mhyolo.infer.input_size import imgsz_arg

TOLERANCES = (5.0, 10.0)  # pixels: the distances the field reports F1 at


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("track", help="ball trajectories in a video or a folder of frames",
                                   description=__doc__)
    parser.add_argument("source", help="a video file or a folder of frames (sorted by name)")
    parser.add_argument("--weights", required=True, help="model file (.safetensors, .pt, .onnx, .xml, .rknn)")
    parser.add_argument("--out", type=Path, default=Path("runs/track"),
                        help="folder for tracks.csv, summary.json, tracks.png, track.mp4")
    parser.add_argument("--imgsz", type=imgsz_arg, default=None,
                        help="whole-frame input size (default: as `mhyolo predict`)")
    parser.add_argument("--conf", type=float, default=0.25, help="whole-frame score a detection needs (0.25)")
    parser.add_argument("--no-redetect", action="store_true",
                        help="do not look again in a window where the track expects the ball")
    parser.add_argument("--window", type=int, default=None,
                        help="re-detection window side in frame pixels (default: the model's input size)")
    parser.add_argument("--redetect-conf", type=float, default=0.1, help="score a detection needs in the window")
    parser.add_argument("--balls", choices=("one", "many"), default="one",
                        help="one ball at a time (default), or several at once (tracks assigned by distance)")
    parser.add_argument("--max-step", type=float, default=80.0, help="pixels the ball may move per frame (80)")
    parser.add_argument("--max-misses", type=int, default=8, help="frames without the ball before a track ends")
    parser.add_argument("--max-gap", type=int, default=8, help="longest gap (frames) filled by interpolation")
    parser.add_argument("--fps", type=float, default=None, help="frames per second of a folder of frames (25)")
    parser.add_argument("--eval", type=Path, metavar="LABELS",
                        help="score against TrackNet's Label.csv (file name, visibility, x, y)")
    parser.add_argument("--no-video", action="store_true", help="do not write track.mp4")
    parser.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=True,
                        help="overlap the whole-frame model calls as `predict` does (same tracks; default: on)")
    parser.add_argument("--streams", type=int, metavar="N",
                        help="throughput mode: model calls in flight (default: the runtime's choice)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mhyolo.infer.assemble import InferenceSettings
    from mhyolo.infer.sources import open_source
    from mhyolo.runtime.model import InferenceModel
    from mhyolo.track.metrics import read_label_csv, score_positions
    from mhyolo.track.motion import MotionSettings
    from mhyolo.track.outputs import plot_tracks, write_csv, write_summary, write_video
    from mhyolo.track.run import TrackSettings, Tracker, check_labels

    settings = TrackSettings(motion=MotionSettings(max_step=args.max_step, max_misses=args.max_misses,
                                                   start_score=args.conf),
                             conf=args.conf, redetect=not args.no_redetect, redetect_conf=args.redetect_conf,
                             max_gap=args.max_gap, many=args.balls == "many")
    labels = read_label_csv(args.eval) if args.eval else None
    source = open_source(args.source)  # a folder without images or an unreadable video is refused here
    model = InferenceModel.load(args.weights, device=args.device)
    predictor = model.predictor(InferenceSettings(conf=min(args.conf, args.redetect_conf)), args.imgsz)
    side = args.window or int(model.input_rule(None)[0])  # the training (or exported) size: native pixels
    if side < 32:
        raise ConfigError(f"--window must be at least 32 pixels, got {side}")
    window = model.predictor(InferenceSettings(conf=args.redetect_conf), side) if settings.redetect else None
    fps = getattr(source, "fps", None) or args.fps or 25.0
    if args.streams is not None and args.streams < 1:
        raise ConfigError(f"--streams must be at least 1, got {args.streams}")
    tracker = Tracker(predictor, settings, window=window, window_side=side, throughput=args.throughput,
                      streams=args.streams)
    passes = predictor.describe() if hasattr(predictor, "describe") else "one pass"
    redetect = f", re-detection in {side}-px windows" if window is not None else ""
    print(f"mhyolo track: {args.source}: whole frames by {passes}{redetect}", file=sys.stderr)
    if labels is not None and not source.is_video:  # a folder's frame names are known before the run
        check_labels(args.eval, labels, {i: path.name for i, path in enumerate(source.files)}, args.source)
    result = tracker.run(_progress(source), fps)
    if labels is not None:
        check_labels(args.eval, labels, result.names, args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {}
    if labels is not None:
        extra["scores"] = {
            "tracked": [score_positions(result.positions(), labels, t).to_dict() for t in TOLERANCES],
            "per_frame": [score_positions(result.baseline_positions(), labels, t).to_dict() for t in TOLERANCES]}
    write_csv(result, args.out / "tracks.csv")
    write_summary(result, args.out / "summary.json", extra)
    plot_tracks(result, args.out / "tracks.png")
    if not args.no_video:
        write_video(result, open_source(args.source), args.out / "track.mp4")
    summary = result.summary()
    print(f"{summary['frames']} frames, {summary['tracks']} track(s): {summary['points']['detected']} detected, "
          f"{summary['points']['redetected']} re-detected, {summary['points']['interpolated']} interpolated; "
          f"{summary['frames_per_second']} frames/s; results in {args.out}", file=sys.stderr)
    for name, rows in extra.get("scores", {}).items():
        print(f"{name}: " + ", ".join(f"F1@{r['tolerance_px']:g}px {r['f1']:.3f} (P {r['precision']:.3f} "
                                     f"R {r['recall']:.3f})" for r in rows), file=sys.stderr)
    return 0


def _progress(source):
    from tqdm import tqdm

    return tqdm(source, total=len(source) or None, unit="frame", file=sys.stderr, dynamic_ncols=True)
