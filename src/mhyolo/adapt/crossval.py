"""What adaptation gains on a source the model never saw, measured with the cross-validation's folds.

For each finished fold (`mhyolo crossval ... --adapt`) the held-out source's images are split by
near-duplicate group into two halves: the **adaptation half**, given to `mhyolo adapt` as unlabelled
target images (its labels are never read by the adaptation), and the **test half**, scored before and
after. A group of near-identical images stays on one side, so no test image has a twin the student
trained on. The labels of the adaptation half are read only afterwards, to say how right the
pseudo-labels were (precision and recall at IoU 0.5, class-agnostic).

    FOLD/adapt/split.json      the two halves (and the hash groups that decided them)
    FOLD/adapt/target/         links to the adaptation half (the adapt run's --images)
    FOLD/adapt/test.txt, test.yaml   the test half as a dataset (its `test` split)
    FOLD/adapt/run/            the `mhyolo adapt` run (resumable as any)
    FOLD/adapt/score.json      before / after each round, per size, and the pseudo-labels' P/R
    RUN/adapt.md, adapt.json   every fold and the mean
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mhyolo.adapt.pseudo import link_or_copy
from mhyolo.adapt.run import run_adapt
from mhyolo.adapt.settings import AdaptSettings
from mhyolo.adapt.targets import HASH_SIZE
from mhyolo.data.dedup import DEFAULT_METHOD, group_ids, packed_near_pairs
from mhyolo.data.hashing import check_images
from mhyolo.data.labels import read_labels
from mhyolo.data.pairing import split_images
from mhyolo.data.spec import label_path_for, load_data_spec
from mhyolo.errors import DataError
from mhyolo.eval.matching import match_predictions
from mhyolo.eval.results import seen_type_scores
from mhyolo.infer.postprocess import xywh2xyxy

ADAPT_DIR = "adapt"
SCORE_JSON = "score.json"
FIGURES = ("map50", "map50_95", "precision", "recall", "cls_accuracy")


@dataclass
class FoldAdaptSettings:
    """How each fold adapts: `mhyolo adapt`'s rounds, epochs and teacher, the near-duplicate radius that
    keeps a group on one side of the split, and the sizes the test half is scored at (empty: the
    fold's training size and each image at its own size, `val`'s default)."""

    rounds: int = 1
    epochs: int = 10
    seed: int = 0
    dedup_bits: int = 6
    teacher: str = "auto"
    sizes: list[int | str] = field(default_factory=list)  # ints, or "native" (each image at its own size)
    options: dict[str, Any] = field(default_factory=dict)  # any other `AdaptSettings` field (batch, keep, ...)
    progress: bool = True


def split_halves(paths: list[Path], seed: int, bits: int, progress: bool = True) -> tuple[list[Path], list[Path]]:
    """(adaptation half, test half): whole near-duplicate groups (perceptual hash within `bits`) in a
    seeded random order, each to the adaptation half until it holds half of the images."""
    checked = check_images([str(p) for p in paths], DEFAULT_METHOD, HASH_SIZE, progress=progress, desc="hash")
    hashed = np.flatnonzero(checked.hashed())
    pairs = [(int(hashed[i]), int(hashed[j]), d)
             for i, j, d in packed_near_pairs(checked.packed[hashed], HASH_SIZE * HASH_SIZE, bits)]
    groups: dict[int, list[int]] = {}
    for index, group in enumerate(group_ids(len(paths), pairs)):
        groups.setdefault(group, []).append(index)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    adapt: list[int] = []
    for group in order:
        if len(adapt) + len(groups[group]) <= len(paths) / 2 or not adapt:
            adapt += groups[group]
    chosen = set(adapt)
    return [paths[i] for i in sorted(chosen)], [p for i, p in enumerate(paths) if i not in chosen]


def prepare_fold(fold: Path, settings: FoldAdaptSettings) -> dict[str, Any]:
    """The halves, the target folder and the test-half dataset (once; kept in `split.json`)."""
    folder = fold / ADAPT_DIR
    split_path = folder / "split.json"
    if split_path.is_file():
        return json.loads(split_path.read_text())
    spec = load_data_spec(fold / "data" / "data.yaml")
    images = split_images(spec, "test")
    if len(images) < 2:
        raise DataError(f"{fold / 'data' / 'data.yaml'}: the held-out (test) split has {len(images)} image(s); "
                        "adaptation needs two halves")
    adapt, test = split_halves(images, settings.seed, settings.dedup_bits, settings.progress)
    target = folder / "target"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    names: dict[str, str] = {}
    for i, image in enumerate(adapt):
        name = image.name if image.stem not in names else f"{i:05d}_{image.name}"
        names[Path(name).stem] = str(image)
        link_or_copy(image, target / name)
    (folder / "test.txt").write_text("".join(f"{p}\n" for p in test), encoding="utf-8")
    data = {"path": str(folder.resolve()), "train": "test.txt", "val": "test.txt", "test": "test.txt", "nc": spec.nc,
            "names": list(spec.names)}
    if spec.type_names:
        data["type_names"] = list(spec.type_names)
    (folder / "test.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    # the labelled data adapt may read: the fold's training sources only (its test split is the held-out
    # source, whose images are the targets and must stay unlabelled)
    labelled = {k: v for k, v in yaml.safe_load(spec.yaml_path.read_text(encoding="utf-8")).items() if k != "test"}
    labelled["path"] = str(spec.root.resolve())  # absolute: the run may be given as a relative folder
    (folder / "labelled.yaml").write_text(yaml.safe_dump(labelled, sort_keys=False), encoding="utf-8")
    split = {"seed": settings.seed, "dedup_bits": settings.dedup_bits, "adapt": [str(p) for p in adapt],
             "test": [str(p) for p in test], "targets": names}
    split_path.write_text(json.dumps(split, indent=2))
    return split


def pseudo_label_quality(pseudo: Path, targets: dict[str, str], iou: float = 0.5) -> dict[str, Any]:
    """Precision and recall of the kept pseudo-labels against the real labels of the same images
    (class-agnostic, IoU `iou` in normalised coordinates, which preserve IoU), read only here."""
    true_positives = kept = real = 0
    for stem, original in targets.items():
        truth, _ = read_labels(label_path_for(Path(original)))
        scored = pseudo / "scores" / f"{stem}.txt"
        rows = np.loadtxt(scored, ndmin=2, dtype=np.float64) if scored.is_file() and scored.stat().st_size else \
            np.zeros((0, 6))
        real += len(truth)
        kept += len(rows)
        if len(rows) and len(truth):
            tp = match_predictions(_corners(truth[:, 1:5]), np.zeros(len(truth), np.int64), _corners(rows[:, 1:5]),
                                   rows[:, 5], np.zeros(len(rows), np.int64), iou)
            true_positives += int(tp.sum())
    return {"images": len(targets), "kept": kept, "real": real, "true_positives": true_positives,
            "precision": true_positives / kept if kept else None, "recall": true_positives / real if real else None}


def _corners(cxcywh: np.ndarray) -> np.ndarray:
    return xywh2xyxy(np.asarray(cxcywh, dtype=np.float64))


def fold_weights(fold: Path, recorded: str) -> Path:
    """The fold's model: `score.json` records it as the crossval named it, relative to the folder the
    crossval ran in; from elsewhere, the same path is found under the fold's own folder."""
    path = Path(recorded)
    if path.is_file():
        return path
    parts = path.parts
    if fold.name in parts:
        inside = fold.joinpath(*parts[len(parts) - parts[::-1].index(fold.name):])
        if inside.is_file():
            return inside
    raise DataError(f"{fold / 'score.json'}: the fold's model {recorded} is not there (nor under {fold})")


def round_models(models: list[Path], before: Path) -> dict[str, Path]:
    """The model before adaptation and each round's (its student, or its teacher where it trained none)."""
    return {"before": before, **{f"round {number}": model for number, model in enumerate(models, start=1)}}


def score_test_half(models: dict[str, Path], data: Path, sizes: list[int | str], imgsz: int, trained: list[str],
                    progress: bool) -> dict[str, dict[str, Any]]:
    """Each model on the test half at each size ("native": each image at its own size, from the training
    size `imgsz` up): the val figures, type accuracy over the types the fold trained on."""
    from mhyolo.eval.validate import score_split
    from mhyolo.runtime.load import load_backend
    from mhyolo.infer.input_size import NativeSize

    spec = load_data_spec(data)
    out: dict[str, dict[str, Any]] = {}
    for name, weights in models.items():
        backend = load_backend(weights)
        for size in sizes:
            if size == "native":
                result = score_split(backend, spec, imgsz, split="test", progress=progress,
                                     native=NativeSize.from_low(imgsz))
            else:
                result = score_split(backend, spec, int(size), split="test", progress=progress)
            summary = result.summary()
            row = {key: summary.get(key) for key in ("map50", "map50_95", "precision", "recall", "images", "boxes")}
            if "confusion_matrix" in summary:
                row.update(seen_type_scores(summary, trained))
            row["size_bins"] = summary["size_bins"]
            out.setdefault(name, {})[str(size)] = row
    return out


def adapt_fold(fold: Path, settings: FoldAdaptSettings) -> dict[str, Any]:
    """One fold: split, adapt on one half (labels unread), score the other half before and after."""
    done = fold / ADAPT_DIR / SCORE_JSON
    if done.is_file():
        return json.loads(done.read_text())
    score = json.loads((fold / "score.json").read_text())
    weights, imgsz = fold_weights(fold, score["weights"]), int(score["imgsz"])
    trained = json.loads((fold / "data" / "fold.json").read_text())["types_in_training"]
    split = prepare_fold(fold, settings)
    folder = fold / ADAPT_DIR
    print(f"\n== adapt {fold.name}: {len(split['adapt'])} unlabelled images, {len(split['test'])} to score")
    result = run_adapt(AdaptSettings(weights=str(weights), images=str(folder / "target"), out=str(folder / "run"),
                                     labelled=str(folder / "labelled.yaml"), rounds=settings.rounds,
                                     epochs=settings.epochs, imgsz=imgsz, teacher=settings.teacher,
                                     seed=settings.seed, progress=settings.progress, **settings.options))
    models = round_models(result.round_models, weights)
    pseudo = {name: pseudo_label_quality(path, split["targets"])
              for name, path in _pseudo_folders(result.run, settings.rounds).items()}
    out = {"fold": fold.name, "weights": str(weights), "imgsz": imgsz, "adapt_images": len(split["adapt"]),
           "test_images": len(split["test"]), "rounds": settings.rounds, "epochs": settings.epochs,
           "scores": score_test_half(models, folder / "test.yaml", settings.sizes or [imgsz, "native"], imgsz,
                                     trained, settings.progress),
           "pseudo_labels": pseudo}
    done.write_text(json.dumps(out, indent=2))
    return out


def _pseudo_folders(run: Path, rounds: int) -> dict[str, Path]:
    return {f"round {n}": (run if n == rounds else run / f"round{n}") / "pseudo" for n in range(1, rounds + 1)}


def adapt_folds(folds: list[Path], settings: FoldAdaptSettings, out: Path) -> dict[str, Any]:
    """Every fold, then `out/adapt.json` and `out/adapt.md` (per fold and the mean over folds)."""
    results = {fold.name: adapt_fold(fold, settings) for fold in folds}
    summary = {"settings": {"rounds": settings.rounds, "epochs": settings.epochs, "seed": settings.seed,
                            "dedup_bits": settings.dedup_bits, "teacher": settings.teacher},
               "folds": results}
    (out / "adapt.json").write_text(json.dumps(summary, indent=2))
    (out / "adapt.md").write_text(adapt_markdown(results))
    return summary


def _cell(value: Any) -> str:
    return "–" if not isinstance(value, (int, float)) else f"{value:.3f}"


def adapt_markdown(results: dict[str, dict[str, Any]]) -> str:
    """One row per fold and model (before, each round) at each scored size, then the mean over folds."""
    lines = ["# Adaptation on held-out sources", "",
             "Each held-out source split by near-duplicate group: the adaptation half given to `mhyolo adapt` "
             "unlabelled, the test half scored before and after. Pseudo-label P/R: the kept pseudo-labels "
             "against the adaptation half's real labels (IoU 0.5, read only for this table).", "",
             "| held-out source | size | model | mAP50 | mAP50-95 | P | R | type acc | pseudo P | pseudo R |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    means: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for fold, result in results.items():
        for model, sizes in result["scores"].items():
            pseudo = result["pseudo_labels"].get(model, {})
            for size, row in sizes.items():
                means.setdefault((size, model), []).append(row)
                lines.append(f"| {fold} | {size} | {model} | " + " | ".join(_cell(row.get(k)) for k in FIGURES)
                             + f" | {_cell(pseudo.get('precision'))} | {_cell(pseudo.get('recall'))} |")
    for (size, model), rows in means.items():
        cells = []
        for key in FIGURES:
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            cells.append(_cell(sum(values) / len(values)) if values else "–")
        lines.append(f"| **mean** | {size} | {model} | " + " | ".join(cells) + " | | |")
    return "\n".join(lines) + "\n"
