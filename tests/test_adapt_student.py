"""What the student of `mhyolo adapt` trains on: the labelled data plus the target images where the
teacher kept a box; target images with no kept box only with `empty_targets` (as ball-free images),
since on held-out sources most of them hold balls the teacher missed."""

from __future__ import annotations

from pathlib import Path

from test_adapt import NAMES, SIDE, _teacher_said, tennis  # noqa: F401 - `tennis` is a fixture

from mhyolo.adapt.pseudo import write_dataset
from mhyolo.adapt.select import select_boxes
from mhyolo.adapt.student import kept_targets, student_data
from mhyolo.data.dataset import YoloDataset
from mhyolo.data.spec import load_data_spec


def test_targets_without_a_kept_box_are_trained_on_only_when_asked(tennis: Path, tmp_path: Path,  # noqa: F811
                                                                   monkeypatch) -> None:
    images = sorted(tennis.glob("*.png"))[:4]
    said = _teacher_said(images)
    said[1].scores[:] = 0.2  # the teacher is unsure of everything on the second image
    said[3].scores[:] = 0.3  # and on the fourth
    monkeypatch.chdir(tmp_path)  # a relative run folder, as `--out runs/adapt` gives
    run = Path("runs") / "adapt"
    write_dataset(run / "pseudo", select_boxes(said, keep=0.5), NAMES, progress=False)
    assert [p.stem for p in kept_targets(run / "pseudo" / "images")] == [images[0].stem, images[2].stem]
    student_data(run / "student.yaml", run / "pseudo" / "images", None, NAMES)
    kept = YoloDataset(load_data_spec(run / "student.yaml"), "train", SIDE, progress=False)
    assert sorted(Path(p).stem for p in kept.files) == [images[0].stem, images[2].stem]
    assert [len(labels) for labels in kept.labels] == [2, 1]  # their kept boxes, read through the list
    assert sum(len(kept[i].ignore) for i in range(len(kept))) == 2  # and their unsure boxes as ignore regions
    student_data(run / "all.yaml", run / "pseudo" / "images", None, NAMES, empty_targets=True)
    every = YoloDataset(load_data_spec(run / "all.yaml"), "train", SIDE, progress=False)
    assert len(every) == 4 and sorted(len(labels) for labels in every.labels) == [0, 0, 1, 2]
    assert sum(len(every[i].ignore) for i in range(4)) == 6  # the unsure boxes of images 1 and 3 too


def test_a_round_with_too_few_kept_targets_trains_no_student() -> None:
    from mhyolo.adapt.pseudo import PseudoSummary
    from mhyolo.adapt.run import too_few_kept

    football = PseudoSummary(images=90, kept=2, ignored=123, negatives=88)  # what the held-out football source gave
    reason = too_few_kept(football, 0.05)
    assert reason is not None and "2 of 90 target images" in reason and "--min-kept 0.05" in reason
    assert too_few_kept(PseudoSummary(images=413, kept=67, negatives=351), 0.05) is None  # basketball: 62 of 413
    assert too_few_kept(PseudoSummary(images=10, kept=0, negatives=10), 0.0) is not None  # none at all: never
    assert too_few_kept(football, 0.0) is None  # --min-kept 0: any kept box trains
