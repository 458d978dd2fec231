"""Training runs: every training run folder in the run, its settings and figures."""

from __future__ import annotations

import csv
from pathlib import Path

from mhyolo.defaults import PREDICT_CONF
from mhyolo.report.html import Html, code, figure, figures, join, paragraph, tag
from mhyolo.report.run_folder import RESULTS_CSV
from mhyolo.report.sections.base import Section, register


# The figures a training run leaves (train/report.py, eval/type_metrics.py), in page order.
TRAINING_FIGURES = {
    "results.png": "Training curves: every column of results.csv against epoch.",
    "pr_curve.png": "Precision-recall at IoU 0.5 of the best checkpoint on the val split.",
    "typed_pr_curve.png": "Precision-recall with the ball types as classes (typed mAP).",
    "type_confusion_matrix.png": "Type confusion per matched ball (rows: true type).",
    "image_type_confusion_matrix.png": "Type confusion per image, by its largest box (rows: true type).",
    "val_predictions.png": "Validation images: ground truth (green, left) beside the predictions at score "
                           f"≥ {PREDICT_CONF}.",
}


@register
class Training(Section):
    """Every training run folder in the run: its settings and figures, one block each."""

    key, title, kind = "training", "Training runs", "training run"

    def available(self) -> bool:
        return bool(self.run.training_folders())

    def _order(self) -> list[Path]:
        """Pipeline stages in their report's order, then the rest by path."""
        folders = self.run.training_folders()
        report = self.run.pipeline_report()
        stages = list(report.models) if report is not None else []
        rank = {name: i for i, name in enumerate(stages)}
        return sorted(folders, key=lambda p: (rank.get(p.name, len(rank)), str(p)))

    def _final(self) -> str | None:
        report = self.run.pipeline_report()
        return report.final_stage if report is not None else None

    def facts(self) -> dict[str, str]:
        folders = self.run.training_folders()
        if folders != [self.run.path]:
            return {}
        info = self._info(self.run.path)
        return {key: info[key] for key in ("model", "epochs", "image size") if key in info}

    def render(self) -> Html:
        folders = self._order()
        final = self._final()
        blocks = [self._block(folder, open_=len(folders) == 1 or folder.name == final, final=folder.name == final)
                  for folder in folders]
        return join([paragraph("Each run's settings and the plots it wrote; open a run to see them."), *blocks])

    def _info(self, folder: Path) -> dict[str, str]:
        relative = folder.relative_to(self.run.path)
        config = self.run.yaml(relative / "config.yaml") or {}
        done = self.run.json(relative / "done.json") or {}
        config = config if isinstance(config, dict) else {}
        info: dict[str, str] = {}
        if config.get("model"):
            info["model"] = Path(str(config["model"])).stem
        if config.get("weights"):
            info["started from"] = Path(str(config["weights"])).name
        epochs = done.get("epochs") if isinstance(done, dict) else None
        info["epochs"] = str(epochs if epochs is not None else self._epochs(folder))
        if config.get("imgsz"):
            info["image size"] = f"{config['imgsz']} px"
        if config.get("freeze"):
            info["frozen"] = str(config["freeze"])
        if isinstance(done, dict) and isinstance(done.get("best_fitness"), (int, float)):
            info["best fitness"] = f"{done['best_fitness']:.3f}"
        return info

    def _epochs(self, folder: Path) -> int:
        path = folder / RESULTS_CSV
        self.run.note(path)
        with path.open(newline="", encoding="utf-8") as f:
            return max(0, sum(1 for row in csv.reader(f) if any(c.strip() for c in row)) - 1)

    def _block(self, folder: Path, open_: bool, final: bool) -> Html:
        relative = folder.relative_to(self.run.path)
        name = "this run" if folder == self.run.path else relative.as_posix()
        info = self._info(folder)
        summary = tag("summary", join([tag("span", name + (" (final model)" if final else ""), class_="run-name"),
                                       " ", tag("span", " · ".join(f"{k} {v}" for k, v in info.items()),
                                                class_="muted")]))
        known = [folder / n for n in TRAINING_FIGURES if (folder / n).is_file()]
        others = sorted(p for p in folder.glob("*.png") if p.name not in TRAINING_FIGURES)
        shown = [figure(p, TRAINING_FIGURES.get(p.name, p.stem.replace("_", " ") + "."),
                        (relative / p.name).as_posix()) for p in [*known, *others]]
        body = figures(shown) if shown else paragraph("No figures in ", code(relative.as_posix() or "."), ".")
        return Html(f'<details class="run"{" open" if open_ else ""}>') + summary + body + Html("</details>")
