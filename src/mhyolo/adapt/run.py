"""One adaptation run: every input checked before anything is written, then the passes in a row,
each skipped when its folder holds `done.json` (`pipeline.stages.is_done` / `mark_done`), so an
interrupted run picks up where it stopped (the student resumes from its `last` checkpoint).

    RUN/adapt.json            the settings; a re-run into RUN must give the same ones
    RUN/frames/               a video's sampled frames
    RUN/targets.json          which targets are near-duplicates and left out
    [RUN/roundK/]             rounds before the last (--rounds > 1) keep their passes here
    RUN/teacher/              predictions.jsonl (every box above the ignore threshold), threshold.json
    RUN/pseudo/               the pseudo-label dataset (`adapt.pseudo`)
    RUN/contact_sheet.png     its highest- and lowest-scoring kept boxes
    RUN/student.yaml          the student's data; RUN/student/ its training run
    RUN/model.safetensors     the adapted model (the last round's student)
    RUN/evaluation.json       before/after on the labelled val split; RUN/report.md, report.json
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mhyolo.adapt.guard import decide
from mhyolo.adapt.pseudo import PseudoSummary, write_dataset
from mhyolo.adapt.report import write_report
from mhyolo.adapt.select import select_boxes
from mhyolo.adapt.settings import DEFAULT_KEEP, AdaptSettings
from mhyolo.adapt.sheet import contact_sheet
from mhyolo.adapt.student import student_config, student_data
from mhyolo.adapt.targets import Duplicates, Target, check_source, find_duplicates, image_targets, sample_video
from mhyolo.adapt.teacher import (TeacherSettings, build_teacher, label_images, label_names, read_predictions,
                                  teacher_builder, write_predictions)
from mhyolo.adapt.threshold import Threshold, calibrate
from mhyolo.data.pairing import split_files
from mhyolo.data.spec import DataSpec, load_data_spec
from mhyolo.defaults import check_stride_multiple, training_file
from mhyolo.errors import ConfigError, DataError
from mhyolo.runtime.load import input_size
from mhyolo.infer.predictor import model_stride
from mhyolo.infer.sources import VideoSource
from mhyolo.model.weights import load_model, resolve_weights, save_checkpoint
from mhyolo.model.yolo import YoloModel
from mhyolo.pipeline.stages import is_done, mark_done, stage_weights, train_stage
from mhyolo.train.report import write_run_files

SETTINGS_FILE = "adapt.json"


@dataclass
class Inputs:
    """What the checks found: everything a run needs, nothing written yet."""

    settings: AdaptSettings  # with absolute paths
    weights: Path
    model: YoloModel
    source: Any  # infer.sources.ImageSource | VideoSource
    labelled: DataSpec | None
    names: list[str]  # the pseudo-labels' classes
    imgsz: int


@dataclass
class AdaptResult:
    run: Path
    model: Path
    pseudo: Path
    report: Path
    sheet: Path
    round_models: list[Path] = field(default_factory=list)  # each round's model: its student, or its teacher kept


def too_few_kept(pseudo: PseudoSummary, min_kept: float) -> str | None:
    """Why a round trains no student (too few target images with a kept box), or None."""
    with_box = pseudo.images - pseudo.negatives
    if with_box > 0 and with_box >= min_kept * pseudo.images:
        return None
    return (f"the teacher kept boxes on {with_box} of {pseudo.images} target images, fewer than --min-kept "
            f"{min_kept:g} of them: a student would learn next to nothing of the target and only train longer on "
            "the labelled data, so the model is kept as it was (lower --precision or --keep to keep more boxes)")


def _labelled_images(spec: DataSpec) -> list[str]:
    return [image for split in spec.splits for image in split_files(spec, split).checked().images]


def check_inputs(settings: AdaptSettings) -> Inputs:
    """Refuse bad input by name before RUN is touched: a missing or non-detector weights file, an
    empty folder, a video that does not open, labelled data that cannot be read or names other classes."""
    teacher_builder(settings.teacher)
    training_file(settings.hyp)
    weights = resolve_weights(settings.weights, download=False).resolve()
    if weights.suffix not in (".pt", ".pth", ".safetensors"):
        raise ConfigError(f"{weights}: adapt fine-tunes the model, so it needs its .pt or .safetensors weights "
                          "(not an exported file)")
    try:
        device = torch.device(settings.device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {settings.device}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {settings.device}: CUDA is not available on this machine")
    model = load_model(weights, device=device)
    source = check_source(settings.images)
    labelled = None
    names = label_names(model)
    if settings.labelled is not None:
        labelled = load_data_spec(settings.labelled)
        for split in labelled.splits:
            split_files(labelled, split).checked()  # missing entries, images sharing a label: refused here
        theirs = list(labelled.type_names or labelled.names)
        if theirs != names:
            raise DataError(f"{labelled.yaml_path}: names {theirs}, but the model's pseudo-labels would be {names}: "
                            "the class ids would not line up")
    imgsz = input_size(model, settings.imgsz)
    stride = model_stride(model)
    check_stride_multiple(imgsz, stride, "--imgsz")
    absolute = replace(settings, weights=str(weights), images=str(Path(settings.images).resolve()),
                       labelled=str(labelled.yaml_path.resolve()) if labelled is not None else None, imgsz=imgsz)
    return Inputs(absolute, weights, model, source, labelled, names, imgsz)


def _check_run_folder(run: Path, settings: AdaptSettings) -> None:
    """A first run records its settings; a re-run must match them (its passes would not)."""
    path = run / SETTINGS_FILE
    wanted = settings.recorded()
    if path.is_file():
        stored = json.loads(path.read_text())
        changed = sorted(key for key in set(stored) | set(wanted) if stored.get(key) != wanted.get(key))
        if changed:
            raise ConfigError(f"{run} was made with other settings ({', '.join(changed)}): resume it with the same "
                              "ones, or give another --out")
        return
    run.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2))


def _targets(inputs: Inputs, run: Path) -> tuple[list[Target], bool]:
    source = inputs.source
    if isinstance(source, VideoSource):
        return sample_video(source, inputs.settings.fps, run / "frames", inputs.settings.progress), True
    return image_targets(source), False


def _duplicates(inputs: Inputs, run: Path, targets: list[Target]) -> Duplicates:
    path = run / "targets.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        return Duplicates({int(k): v for k, v in stored["of_target"].items()},
                          {int(k): v for k, v in stored["of_labelled"].items()})
    bits = inputs.settings.dedup_bits
    if bits is None:
        found = Duplicates({}, {})
    else:
        labelled = _labelled_images(inputs.labelled) if inputs.labelled is not None else []
        found = find_duplicates([t.path for t in targets], labelled, bits, inputs.settings.progress)
    path.write_text(json.dumps(asdict(found), indent=1))
    return found


def teacher_pass(folder: Path, teacher_weights: Path, inputs: Inputs, paths: list[str]) -> Threshold:
    """Predictions of every target in `paths` and the keep threshold, into `folder`."""
    settings = inputs.settings
    if is_done(folder):
        return Threshold(**json.loads((folder / "threshold.json").read_text()))
    model = inputs.model if teacher_weights == inputs.weights else load_model(teacher_weights, settings.device)
    teacher = build_teacher(settings.teacher, model, TeacherSettings(inputs.imgsz, settings.ignore,
                                                                     slice_factor=settings.slice_factor))
    if settings.keep is not None:
        threshold = Threshold(settings.keep, settings.ignore, "given", f"--keep {settings.keep}")
    else:
        threshold = calibrate(teacher, inputs.labelled, settings.precision, DEFAULT_KEEP, settings.ignore,
                              settings.classes, settings.progress)
    items = label_images(teacher, paths, settings.classes, settings.progress)
    write_predictions(folder / "predictions.jsonl", items)
    (folder / "threshold.json").write_text(json.dumps(threshold.to_dict(), indent=2))
    mark_done(folder, {"teacher": str(teacher_weights), "images": len(items),
                       "unreadable": sum(item.error is not None for item in items)})
    return threshold


def pseudo_pass(round_dir: Path, inputs: Inputs, threshold: Threshold, dropped: set[str],
                video: bool) -> PseudoSummary:
    """The pseudo-label dataset and its contact sheet from the teacher's predictions."""
    folder = round_dir / "pseudo"
    done = round_dir / "pseudo.done.json"
    if done.is_file():
        return PseudoSummary(**json.loads(done.read_text()))
    items = read_predictions(round_dir / "teacher" / "predictions.jsonl")
    temporal = inputs.settings.temporal_k if video else 0.0
    selections = [s for s in select_boxes(items, threshold.keep, temporal)
                  if s.item.error is None and s.item.path not in dropped]
    summary = write_dataset(folder, selections, inputs.names, inputs.settings.progress)
    contact_sheet(selections, round_dir / "contact_sheet.png")
    done.write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def student_pass(round_dir: Path, inputs: Inputs) -> Path:
    settings = inputs.settings
    data_yaml = round_dir / "student.yaml"
    if not is_done(round_dir / "student"):
        real_val = student_data(data_yaml, round_dir / "pseudo" / "images", inputs.labelled, inputs.names,
                                empty_targets=settings.empty_targets)
        train = student_config(settings.hyp, data_yaml, inputs.weights, inputs.imgsz, settings.epochs,
                               settings.batch, single_class=inputs.model.detect.nc == 1, real_val=real_val,
                               device=settings.device, workers=settings.workers, seed=settings.seed)
        # the report scores the student itself: the run keeps its settings and curves only
        train_stage("student", train, round_dir, settings.progress, finish=write_run_files)
    return stage_weights(round_dir, "student")


def evaluation_pass(run: Path, inputs: Inputs, final: Path) -> dict[str, Any] | None:
    """The given model and the adapted one on the labelled val split (None without one)."""
    from mhyolo.pipeline.report import score

    labelled = inputs.labelled
    if labelled is None or "val" not in labelled.splits:
        return None
    path = run / "evaluation.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = {"data": str(labelled.yaml_path), "imgsz": inputs.imgsz,
              "before": score(inputs.weights, labelled.yaml_path, inputs.imgsz),
              "after": score(final, labelled.yaml_path, inputs.imgsz)}
    path.write_text(json.dumps(result, indent=2))
    return result


def _write_final(source: Path, final: Path, inputs: Inputs) -> None:
    """The run's model as `RUN/model.safetensors`: a student's checkpoint copied, the given model (a YOLOv5
    `.pt` too) written as a safetensors checkpoint."""
    if Path(source).suffix == ".safetensors":
        shutil.copyfile(source, final)
    else:
        save_checkpoint(final, inputs.model, {"adapted_from": str(source)})


def run_adapt(settings: AdaptSettings) -> AdaptResult:
    inputs = check_inputs(settings)
    settings = inputs.settings
    run = Path(settings.out)
    _check_run_folder(run, settings)
    targets, video = _targets(inputs, run)
    duplicates = _duplicates(inputs, run, targets)
    dropped = {targets[i].path for i in duplicates.dropped()}
    # a video's neighbours matter to the temporal filter: every frame is labelled there
    paths = [t.path for t in targets] if video else [t.path for t in targets if t.path not in dropped]
    teacher = inputs.weights
    rounds: list[dict[str, Any]] = []
    models: list[Path] = []
    for number in range(1, settings.rounds + 1):
        round_dir = run if number == settings.rounds else run / f"round{number}"
        if settings.rounds > 1:
            print(f"\n== round {number} of {settings.rounds}: teacher {teacher}")
        threshold = teacher_pass(round_dir / "teacher", teacher, inputs, paths)
        pseudo = pseudo_pass(round_dir, inputs, threshold, dropped, video)
        skipped = too_few_kept(pseudo, settings.min_kept)
        if skipped is not None:
            print(f"mhyolo adapt: round {number}: not adapted: {skipped}", file=sys.stderr)
            rounds.append({"teacher": str(teacher), "threshold": threshold.to_dict(), "pseudo": pseudo.to_dict(),
                           "student": None, "skipped": skipped})
            models.append(teacher)
            continue
        student = student_pass(round_dir, inputs)
        rounds.append({"teacher": str(teacher), "threshold": threshold.to_dict(), "pseudo": pseudo.to_dict(),
                       "student": str(student)})
        models.append(student)
        teacher = student
    evaluation = evaluation_pass(run, inputs, teacher)  # the last round's student (or the given model)
    decision = decide(evaluation, settings.max_val_drop) if teacher != inputs.weights else None
    final = run / "model.safetensors"
    _write_final(teacher if decision is None or decision.adapted else inputs.weights, final, inputs)
    unreadable = json.loads((run / "teacher" / "done.json").read_text())["unreadable"]
    summary = {"weights": settings.weights, "images": settings.images, "labelled": settings.labelled,
               "video": video, "fps": settings.fps, "targets": len(targets), "imgsz": inputs.imgsz,
               "teacher": settings.teacher, "epochs": settings.epochs, "unreadable": unreadable,
               "duplicates": {"of_target": len(duplicates.of_target), "of_labelled": len(duplicates.of_labelled)},
               "rounds": rounds, "model": str(final), "pseudo": str(run / "pseudo"),
               "evaluation": evaluation, "decision": None if decision is None else asdict(decision)}
    report = write_report(run, summary)
    return AdaptResult(run=run, model=final, pseudo=run / "pseudo", report=report, sheet=run / "contact_sheet.png",
                       round_models=models)
