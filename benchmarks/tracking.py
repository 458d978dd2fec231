"""Ball tracking on synthetic 1280x720 clips at two ball sizes: F1 at 5 and 10 px of the per-frame best
detection, of tracking, of tracking with re-detection in the track's window (frame by frame, and with the
whole-frame calls overlapped in the throughput mode), and of full slicing (tiles of
the training size over the whole frame, tracked), with frames/s of each.

    python benchmarks/tracking.py runs/demo/model.safetensors --sizes 8 30 --frames 60
    python benchmarks/tracking.py runs/demo/model.safetensors --two-balls 30 --frames 60

`--two-balls S`: a second ball (another photo, another path) in the same clip, tracked with `--balls many`;
prints identity switches and fragmented tracks per ball at 10 px.

Each clip: a real ball (cut from a seed_balls photo) pasted along a bouncing path onto a real ball-free
frame of the basketball source, motion-blurred, hidden in three frames. Name the CPU beside the figures.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch

from mhyolo.infer.assemble import InferenceSettings
from mhyolo.infer.slicing import SliceSettings
from mhyolo.infer.sources import Frame
from mhyolo.machine import cpu_info
from mhyolo.paths import shared_dir
from mhyolo.runtime.model import InferenceModel
from mhyolo.track.metrics import BallLabel, score_identities, score_positions
from mhyolo.track.run import Tracker, TrackSettings
from mhyolo.track.synthetic import ClipSettings, add_ball, ball_free_images, ball_patch, make_clip


def clip(size: float, frames: int, seed: int) -> tuple[list[Frame], dict[str, BallLabel]]:
    shared = shared_dir() / "data"
    photo = sorted((shared / "seed_balls" / "images").glob("tennis*"))[0]
    patch, mask = ball_patch(photo, shared / "seed_balls" / "labels" / f"{photo.stem}.txt")
    background = cv2.imread(str(ball_free_images(shared / "basketball_f2rlv")[1]))
    images, labels = make_clip(background, patch, mask, ClipSettings(frames=frames, ball_px=size, hidden=(20, 21, 22),
                                                                     seed=seed))
    named = [Frame(name=f"f{i:04d}", path=Path(f"f{i:04d}"), image=image, index=i) for i, image in enumerate(images)]
    return named, {frame.name: label for frame, label in zip(named, labels)}


def two_balls(model: InferenceModel, size: float, frames: int, seed: int) -> None:
    shared = shared_dir() / "data"
    photos = sorted((shared / "seed_balls" / "images").glob("tennis*"))[:2]
    patches = [ball_patch(p, shared / "seed_balls" / "labels" / f"{p.stem}.txt") for p in photos]
    background = cv2.imread(str(ball_free_images(shared / "basketball_f2rlv")[1]))
    images, first = make_clip(background, *patches[0], ClipSettings(frames=frames, ball_px=size, hidden=(20, 21, 22),
                                                                     seed=seed))
    second = add_ball(images, *patches[1], ClipSettings(frames=frames, ball_px=size, speed=-11.0, seed=seed + 7))
    named = [Frame(name=f"f{i:04d}", path=Path(f"f{i:04d}"), image=image, index=i) for i, image in enumerate(images)]
    side = int(model.input_rule(None)[0])
    tracker = Tracker(model.predictor(InferenceSettings(conf=0.1), None), TrackSettings(many=True),
                      window=model.predictor(InferenceSettings(conf=0.1), side), window_side=side)
    started = time.perf_counter()
    result = tracker.run(named, fps=25.0)
    fps = len(named) / (time.perf_counter() - started)
    tracks = {i + 1: {p.frame: p.centre for p in track} for i, track in enumerate(result.tracks)}
    score = score_identities(tracks, [first, second], tolerance=10.0)
    print(f"two {size:g}-px balls, {frames} frames: {len(result.tracks)} track(s), identity switches "
          f"{score.switches}, fragments {score.fragments}, ball-frames matched {score.matched} of {score.visible}; "
          f"{fps:.2f} frames/s; model calls {result.model_calls} + windows {result.window_calls}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--sizes", type=float, nargs="+", default=[8.0, 30.0], help="ball diameters in pixels")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--two-balls", type=float, metavar="SIZE", help="only the two-ball clip, balls of SIZE px")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = InferenceModel.load(args.weights)
    if args.two_balls:
        two_balls(model, args.two_balls, args.frames, args.seed)
        return
    side = int(model.input_rule(None)[0])
    whole = model.predictor(InferenceSettings(conf=0.1), None)
    window = model.predictor(InferenceSettings(conf=0.1), side)
    sliced = model.predictor(InferenceSettings(conf=0.1, slicing=SliceSettings(size=side)), side)
    variants = {"tracking": (whole, None, False), "tracking + re-detection": (whole, window, False),
                "tracking + re-detection, throughput mode": (whole, window, True),
                "full slicing, tracked": (sliced, None, False)}
    passes = whole.describe() if hasattr(whole, "describe") else f"one pass at {side} px"  # an exported graph
    print(f"CPU: {cpu_info(2).describe()}; model {args.weights}; whole frames: {passes}; windows and tiles "
          f"{side} px; {args.frames} frames of 1280x720 per clip")
    print("| ball | method | F1@5px | F1@10px | P@10 | R@10 | frames/s | model calls + windows |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        frames, labels = clip(size, args.frames, args.seed)
        for name, (predictor, redetect, throughput) in variants.items():
            tracker = Tracker(predictor, TrackSettings(redetect=redetect is not None), window=redetect, window_side=side,
                              throughput=throughput)
            started = time.perf_counter()
            result = tracker.run(frames, fps=25.0)
            fps = len(frames) / (time.perf_counter() - started)
            rows = [("per-frame best detection" if name == "tracking" else None, result.baseline_positions(), fps,
                     f"{result.model_calls}"),
                    (name, result.positions(), fps, f"{result.model_calls} + {result.window_calls}")]
            if name == "full slicing, tracked":
                rows[0] = ("full slicing, per-frame best", result.baseline_positions(), fps, f"{result.model_calls}")
            for label, positions, speed, calls in rows:
                if label is None:
                    continue
                at5, at10 = (score_positions(positions, labels, t) for t in (5.0, 10.0))
                print(f"| {size:g} px | {label} | {at5.f1:.3f} | {at10.f1:.3f} | {at10.precision:.3f} | "
                      f"{at10.recall:.3f} | {speed:.2f} | {calls} |")


if __name__ == "__main__":
    main()
