"""Every command line of the README's `## The stages` block, run in the README's order on tiny data.

The block is read from README.md itself: a line added or changed there is run here without
touching this file. The README's order is a pipeline (build data, train the detector, the type
head, ... export, quantize, benchmark, classify), so each command runs on what the ones before
it wrote, in one folder (the test's working directory). Three explicit tables adapt a line:

- `SUBSTITUTE`: placeholder paths (files a user has, or that another command makes) and the
  programs `torchrun` / `python`, rewritten to what this test made earlier;
- `SMALL`: options appended to make a run tiny (one epoch, 64 px, a few timed rounds); later
  options win in argparse, so they replace the README's values;
- `SKIP`: the lines that cannot run here, each with its reason (and, where it depends on the
  machine, the condition).

A line that none of the runners knows (not `mhyolo`, `python benchmarks/...` or `torchrun`)
fails the test with the line quoted, as does a line that exits non-zero or does not write what
its `--out` names. Table entries that match no README line fail too, so the tables stay small.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import yaml

import mhyolo

REPO = Path(__file__).parents[1]
README = REPO / "README.md"
SRC = Path(mhyolo.__file__).parents[1]  # the package the test imports; subprocesses import the same one

# -- the tables -----------------------------------------------------------------------------------

# README token -> replacement ({name} fields are the files made by `_inputs`). Paths the README's
# own commands write (runs/data/seed/data.yaml, runs/det, runs/multihead/..., model.onnx, runs/cls)
# are not here: the earlier lines make them in this folder. `yolov5n.pt` is not either: like a
# user's, the bare name is found in the shared folder ($MHYOLO_SHARED/weights).
SUBSTITUTE = {
    "../shared/images": "{shared}/images",                        # the checkout's sibling: $MHYOLO_SHARED
    "configs/seed.yaml": "{recipe}",                              # 210 images -> 4 per type
    "...": "runs/data/seed/data.yaml",                            # torchrun's elided --data
    "configs/pipeline/seed.yaml": "{pipeline}",                   # every stage, one epoch each at 64 px
    "my_recipe.yaml": "{pipeline}",
    "configs/pipeline/demo.yaml": "{crossval}",                   # two small sources, one epoch at 64 px
    "D.yaml": "runs/data/seed/data.yaml",
    "T.safetensors": "runs/multihead/weights/best.safetensors",   # any checkpoint is a teacher
    "configs/pipeline/distill.yaml": "{distill}",                 # teacher, one student, one variant, one seed
    "runs/demo/model.safetensors": "runs/seed/model.safetensors",  # `make demo`'s model: the pipeline's above
    "my_footage.mp4": "{video}",                                  # 12 frames of ball photos
    "frames/": "{frames}",                                        # two ball photos
    "DATA.yaml": "runs/cv/demo/tennis/data/data.yaml",            # a crossval fold: it has a test split
    "W": "runs/multihead/weights/best.safetensors",
    "M": "runs/multihead/weights/best.safetensors",
    "NAME=CLS": "cls=runs/cls/weights/best.safetensors",
}

TRAIN = ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--quiet"]
TIMED = ["--runs", "2", "--warmup", "1"]

# Words of a command (in order, not necessarily adjacent) -> options appended; the longest match wins.
SMALL: dict[tuple[str, ...], list[str]] = {
    ("mhyolo", "predict"): ["--imgsz", "128"],
    ("mhyolo", "predict", "--slice"): [],  # tiles at the model's trained size (64 px)
    ("mhyolo", "predict", "--scales"): [],
    ("mhyolo", "data", "build"): ["--no-progress"],
    ("mhyolo", "train"): TRAIN,
    ("mhyolo", "train", "--resume"): ["--quiet"],  # the run's own settings
    ("mhyolo.cli", "train"): TRAIN,
    ("mhyolo", "pipeline"): ["--quiet"],
    ("mhyolo", "crossval"): ["--sources", "tennis", "--eval-imgsz", "96", "--quiet"],  # one fold of two
    ("mhyolo", "adapt"): ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0", "--fps", "4",
                          "--quiet"],
    ("mhyolo", "track"): ["--imgsz", "128", "--window", "64"],
    ("mhyolo", "quantize"): ["--calib-images", "4"],
    ("mhyolo", "benchmark"): [*TIMED, "--calib-images", "4", "--quiet"],
    # every format is made and timed by the line above; this one is about a model without data
    ("mhyolo", "benchmark", "--no-accuracy"): [*TIMED, "--calib-images", "4", "--imgsz", "64", "--formats", "torch",
                                              "onnx", "onnx-int8", "openvino", "--quiet"],
    ("mhyolo", "benchmark", "--classifier"): [*TIMED, "--calib-images", "4", "--balls", "1", "--quiet"],
    ("benchmarks/latency.py",): [*TIMED, "--sizes", "64", "32"],
    ("benchmarks/heads.py",): [*TIMED, "--imgsz", "64"],
    ("benchmarks/two_stage.py",): [*TIMED, "--imgsz", "64", "--out", "runs/two_stage"],
    ("mhyolo", "classify", "train"): ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--quiet"],
    ("mhyolo", "classify", "export"): ["--calib-crops", "4"],
}


def _rknn_absent() -> str | None:
    from mhyolo.deploy import rknn
    from mhyolo.errors import MhyoloError

    try:
        rknn.find_rknn_python()
    except MhyoloError:
        return "the rknn-toolkit2 environment is absent (`make rknn-env`), as for tests/test_rknn.py's rknn group"
    return None


def _network() -> str | None:
    return "downloads the datasets and weights over the network; `mhyolo data fetch --list` runs instead"


# Exact command (after joining `\` lines and dropping comments) -> why it is not run: a function
# returning the reason, or None where the line can run on this machine.
SKIP = {
    "mhyolo data fetch": _network,
    "mhyolo quantize --weights model.onnx --backend rknn --calib runs/data/seed/data.yaml --out model.rknn":
        _rknn_absent,
}
INSTEAD = {"mhyolo data fetch": "mhyolo data fetch --list"}  # the offline part of a skipped line


# -- the README block -----------------------------------------------------------------------------

def readme_commands(text: str) -> list[str]:
    """The command lines of the bash block under `## The stages`: continuations joined, comments dropped."""
    match = re.search(r"^## The stages\s*\n+```bash\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no ```bash block right under '## The stages'"
    commands, current = [], ""
    for line in match.group(1).splitlines():
        current += line
        if current.rstrip().endswith("\\"):
            current = current.rstrip()[:-1] + " "
            continue
        words = shlex.split(current, comments=True)
        if words:
            commands.append(shlex.join(words))
        current = ""
    assert not current.strip(), f"the block ends inside a continued line: {current!r}"
    return commands


def test_block_parsing_joins_continuations_and_drops_comments() -> None:
    text = ("## The stages\n\n```bash\nmhyolo a --x 1    # comment\nmhyolo b \\\n    --y 2  # more\n"
            "# a comment line\n```\n")
    assert readme_commands(text) == ["mhyolo a --x 1", "mhyolo b --y 2"]


def _small(words: list[str]) -> list[str]:
    def matches(key: tuple[str, ...]) -> bool:
        rest = iter(words)
        return all(word in rest for word in key)

    keys = [key for key in SMALL if matches(key)]
    return SMALL[max(keys, key=len)] if keys else []


# -- the tiny inputs ------------------------------------------------------------------------------

FAST = {"epochs": 1, "batch": 4, "workers": 0, "close_mosaic": 0}
SEED_MAP = {"basketball": "basketball", "football": "football", "tennis-ball": "tennis-ball"}


def _tennis_source(shared: Path, out: Path, count: int = 4) -> Path:
    """The first `count` images of tennis_icifx's valid split as a source folder of their own."""
    source = shared / "data" / "tennis_icifx" / "valid"
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for image in sorted((source / "images").glob("*.jpg"))[:count]:
        shutil.copy(image, out / "images" / image.name)
        shutil.copy(source / "labels" / f"{image.stem}.txt", out / "labels" / f"{image.stem}.txt")
    (out / "data.yaml").write_text("train: images\nval: images\nnc: 1\nnames: [tennis-ball]\n")
    return out


def _inputs(shared: Path, folder: Path) -> dict[str, str]:
    """The files the SUBSTITUTE table names, made in `folder/inputs`."""
    inputs = folder / "inputs"
    inputs.mkdir()
    seed = {"name": "seed", "path": str(shared / "data" / "seed_balls"), "classes": SEED_MAP, "sample": 4}
    recipe = {"classes": list(SEED_MAP), "seed": 0, "val_fraction": 0.25, "sources": [seed]}
    (inputs / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    tennis = {"name": "tennis", "path": str(_tennis_source(shared, inputs / "tennis")),
              "classes": {"tennis-ball": "tennis-ball"}}
    (inputs / "recipe2.yaml").write_text(yaml.safe_dump({**recipe, "sources": [seed, tennis]}))

    off = {"enabled": False}
    stages = {"imgsz": 64, "seed": 0, "latency_runs": 2,
              "benchmark": {"formats": ["torch", "onnx"], "runs": 2, "calib_images": 4}}
    # "all of the above in a row": the README's training lines as stages (configs/pipeline/seed.yaml
    # adds the image head and the nc=3 baseline; tests/test_pipeline.py runs those)
    pipeline = {"recipe": "recipe.yaml", **stages,
                "detector": {"hyp": "hyp", "overrides": FAST},
                "head": {"hyp": "head", "overrides": FAST}, "joint": {"hyp": "joint", "overrides": FAST},
                "multihead": {"enabled": True, "hyp": "multihead", "overrides": FAST}, "final": "multihead"}
    crossval = {"recipe": "recipe2.yaml", **stages, "detector": off, "head": off, "joint": off,
                "multihead": {"enabled": True, "hyp": "multihead", "overrides": FAST}}
    distill = {"recipe": "recipe.yaml", **stages, "detector": off, "head": off, "joint": off,
               "distill": {"enabled": True, "teacher": {"hyp": "multihead", "overrides": FAST},
                           "student": {"hyp": "multihead", "overrides": FAST},
                           "variants": {"response_kd": {"response_kd": {"weight": 0.1, "task_weight": 0.5}}},
                           "seeds": [0]}}
    for name, config in (("pipeline", pipeline), ("crossval", crossval), ("distill", distill)):
        (inputs / f"{name}.yaml").write_text(yaml.safe_dump(config))

    photos = sorted((shared / "data" / "seed_balls" / "images").glob("*.jpg"))[::70][:3]
    frames = inputs / "frames"
    frames.mkdir()
    for photo in photos[:2]:  # camera frames: larger than the README's 320-px tiles
        cv2.imwrite(str(frames / photo.name), cv2.resize(cv2.imread(str(photo)), (640, 360)))
    video = inputs / "footage.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 4.0, (320, 320))
    for i in range(12):
        writer.write(cv2.resize(cv2.imread(str(photos[i // 4])), (320, 320)))
    writer.release()
    return {"shared": str(shared), "recipe": str(inputs / "recipe.yaml"), "pipeline": str(inputs / "pipeline.yaml"),
            "crossval": str(inputs / "crossval.yaml"), "distill": str(inputs / "distill.yaml"),
            "video": str(video), "frames": str(frames)}


# -- running a line -------------------------------------------------------------------------------

@dataclass
class Outcome:
    code: int
    output: str


def _cpu() -> float:
    """CPU seconds of this process and its finished subprocesses."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _subprocess(argv: list[str]) -> Outcome:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    # its own session: torchrun's agent signals its process group on shutdown (see tests/test_train.py)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900,
                          start_new_session=True, stdin=subprocess.DEVNULL)
    return Outcome(done.returncode, done.stdout + done.stderr)


def _in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    from mhyolo.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: an option the command does not know
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        code = 1
        print(traceback.format_exc())
    out = capsys.readouterr()
    return Outcome(code, out.out + out.err)


def _run(words: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome | None:
    """Run a (substituted, shortened) command line; None when no runner knows its program."""
    program, *rest = words
    if program == "mhyolo":
        return _in_process(rest, capsys)
    if program == "python" and rest and rest[0].startswith("benchmarks/"):
        return _subprocess([sys.executable, str(REPO / rest[0]), *rest[1:]])
    if program == "torchrun":
        return _subprocess([sys.executable, "-m", "torch.distributed.run", "--master_port", _free_port(), *rest])
    return None


def _written(words: list[str]) -> list[Path]:
    """What the line says it writes: the values of --out / -o / --plots, a report's page."""
    paths = [Path(words[i + 1]) for i, word in enumerate(words[:-1]) if word in ("--out", "-o", "--plots")]
    if words[:2] == ["mhyolo", "report"]:
        paths.append(Path(words[2]) / "report.html")
    return paths


@pytest.mark.slow
def test_every_readme_stage_command_runs(shared: Path, official_weights: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    commands = readme_commands(README.read_text())
    assert not set(SKIP) - set(commands), f"SKIP names lines the README no longer has: {set(SKIP) - set(commands)}"
    tokens = {word for command in commands for word in shlex.split(command)}
    assert not set(SUBSTITUTE) - tokens, f"SUBSTITUTE names words the README no longer has: " \
                                          f"{set(SUBSTITUTE) - tokens}"
    fields = _inputs(shared, tmp_path)
    monkeypatch.chdir(tmp_path)

    skipped, timings = [], []
    for command in commands:
        reason = SKIP[command]() if command in SKIP else None
        if reason:
            skipped.append(f"{command}  -- {reason}")
            if command in INSTEAD:
                command = INSTEAD[command]
            else:
                continue
        words = [SUBSTITUTE.get(word, word).format(**fields) for word in shlex.split(command)]
        words += _small(words)
        start, cpu = time.monotonic(), _cpu()
        outcome = _run(words, capsys)
        timings.append(f"{time.monotonic() - start:7.1f} s ({_cpu() - cpu:5.1f} s CPU)  {shlex.join(words)}")
        (tmp_path / "timings.txt").write_text("\n".join(timings) + "\n")  # where the minutes go
        assert outcome is not None, f"README line neither run nor in SKIP (no runner for {words[0]!r}): {command}"
        assert outcome.code == 0, (f"README line failed (exit {outcome.code}): {command}\n"
                                   f"ran as: {shlex.join(words)}\n{outcome.output[-4000:]}")
        for path in _written(words):
            assert path.exists(), f"README line did not write {path}: {command}\nran as: {shlex.join(words)}"
    with capsys.disabled():
        print(f"\n{len(commands) - len(skipped)} of {len(commands)} README lines run; skipped:\n  " +
              "\n  ".join(skipped))
