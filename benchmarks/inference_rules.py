"""Inference rules scored on held-out sources: which input size (or sizes, or slicing) finds balls of
every size in photos from sources a model never saw.

Each fold model of one or more `mhyolo crossval` runs scores its held-out source under each rule;
the table gives per source and per ball-size bin (original-image pixels) AP@0.5, then the mean over
the folds. Scores are kept in `RUN/<fold>/rules.json`, so a rule is scored once per fold.

    .venv/bin/python benchmarks/inference_rules.py runs/cv5/demo-s0 --rules size=320 size=640 size=1280 slice=320

Rules: `size=N` (the whole image at N px), `slice=N` (native-resolution tiles of N px plus the whole image,
each at the training size), `scales=320,640` with optional `merge=wbf|nms|size`, `then=wbf|nms` (what merges
the size rule's boxes), `band=MIN,MAX`, `wbfconf=avg|max|...` and `flip` (`scales=320,640 merge=size` as one
argument, words separated by spaces). `size=native` runs each image at its own size (its long side, rounded
to the stride, kept within [training size, 1280]: `--imgsz native`); in `scales=320,native` the word stands
for the held-out source's size, taken from its first test image. `default` is the tool's default rule
(`mhyolo val` without size flags, `infer.default_rule`): the training size and each image's own size,
merged by ball size.
A `size=N` rule the crossval already scored (with size bins) is read from its `score.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BINS = ("tiny", "small", "medium", "large")


def parse_rule(text: str) -> dict[str, Any]:
    """`size=640`, `slice=320`, `scales=320,640 merge=wbf flip` -> a dict of settings."""
    rule: dict[str, Any] = {}
    if text.strip() == "default":
        return {"default": True}
    for word in text.split():
        key, _, value = word.partition("=")
        if key == "flip" and not value:
            rule["flip"] = True
        elif key == "size":
            rule[key] = value if value == "native" else int(value)
        elif key == "slice":
            rule[key] = int(value)
        elif key == "scales":
            rule[key] = [v if v == "native" else float(v) if "." in v else int(v) for v in value.split(",")]
        elif key == "band":
            low, high = value.split(",")
            rule[key] = (float(low), float(high))
        elif key in ("merge", "then", "wbfconf"):
            rule[key] = value
        else:
            raise SystemExit(f"rule {text!r}: unknown word {word!r}")
    if sum(k in rule for k in ("size", "slice", "scales")) != 1:
        raise SystemExit(f"rule {text!r}: give exactly one of size=, slice=, scales=")
    return rule


NATIVE_MAX = 1280
STRIDE = 32


def native_size(spec, trained: int) -> int:
    """The held-out source's own image size (for `scales=`): the long side of its first test image, on the
    stride grid."""
    import cv2

    from mhyolo.data.pairing import split_images

    image = cv2.imread(str(split_images(spec, "test")[0]))
    side = int(round(max(image.shape[:2]) / STRIDE)) * STRIDE
    return min(max(side, trained), NATIVE_MAX)


def score_rule(weights: str, data: Path, rule: dict[str, Any], trained: int) -> dict[str, Any]:
    """The held-out test split scored under `rule`: the `val --json` summary."""
    from mhyolo.data.spec import load_data_spec
    from mhyolo.eval.validate import score_split
    from mhyolo.runtime.load import load_backend
    from mhyolo.infer.input_size import NativeSize
    from mhyolo.infer.slicing import SliceSettings

    backend = load_backend(weights)
    spec = load_data_spec(data)
    if rule.get("default"):
        from mhyolo.infer.default_rule import DEFAULT_SCALES

        result = score_split(backend, spec, trained, split="test", progress=True, scales=DEFAULT_SCALES)
    elif rule.get("size") == "native":  # each image at its own size
        result = score_split(backend, spec, trained, split="test", progress=True,
                             native=NativeSize.from_low(trained))
    elif "size" in rule:
        result = score_split(backend, spec, rule["size"], split="test", progress=True)
    elif "slice" in rule:
        result = score_split(backend, spec, trained, split="test", progress=True,
                             slicing=SliceSettings(size=rule["slice"]))
    else:
        from mhyolo.infer.multiscale import ScaleSettings
        from mhyolo.infer.scale_merge import MergeOptions

        sizes = [native_size(spec, trained) if v == "native" else v for v in rule["scales"]]
        options = MergeOptions(**{k: v for k, v in (("then", rule.get("then")), ("band", rule.get("band")),
                                                    ("wbf_conf", rule.get("wbfconf"))) if v is not None})
        settings = ScaleSettings(sizes=tuple(dict.fromkeys(sizes)), flip=rule.get("flip", False),
                                 merge=rule.get("merge", "wbf"), options=options)
        result = score_split(backend, spec, trained, split="test", progress=True, scales=settings)
    return result.summary()


def held_out_types(entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A rule's scores with the type figures counted as the crossval counts them: over the boxes whose
    true type the fold trained on (a held-out source's unseen type cannot be named)."""
    from mhyolo.eval.results import seen_type_scores

    if "confusion_matrix" not in entry:  # the crossval's own row: counted so already
        return entry
    trained = json.loads((folder / "data" / "fold.json").read_text())["types_in_training"]
    return {**entry, **seen_type_scores(entry, trained)}


def fold_folders(run: Path) -> list[Path]:
    return sorted(p for p in run.iterdir() if (p / "score.json").is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="crossval output folders")
    parser.add_argument("--rules", nargs="+", required=True, help="inference rules (see above)")
    parser.add_argument("--json", type=Path, help="also write every score here")
    args = parser.parse_args()
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for run in args.runs:
        for folder in fold_folders(run):
            fold = json.loads((folder / "score.json").read_text())
            cache_path = folder / "rules.json"
            cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
            for text in args.rules:
                rule = parse_rule(text)
                scored = fold["scores"].get(str(rule.get("size")), {})
                if text not in cache and isinstance(rule.get("size"), int) and "size_bins" in scored:
                    cache[text] = scored  # the crossval's own score at that size
                if text not in cache:
                    print(f"{run.name}/{folder.name}: {text}", flush=True)
                    cache[text] = score_rule(fold["weights"], folder / "data" / "data.yaml", rule,
                                             int(fold["imgsz"]))
                    cache_path.write_text(json.dumps(cache, indent=2))
                table.setdefault(f"{run.name} | {text}", {})[folder.name] = held_out_types(cache[text], folder)
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    print(render(table))


def _cell(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def render(table: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One row per run and rule: mAP50 per held-out source, their mean, and the mean per size bin."""
    sources = sorted({s for folds in table.values() for s in folds})
    head = ["run", "rule", *sources, "mean mAP50", "mean mAP50-95", "mean type acc",
            *[f"{b} AP50" for b in BINS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, folds in table.items():
        rows = [folds.get(s, {}) for s in sources]
        bins = [_mean([(r.get("size_bins") or {}).get(b, {}).get("map50") for r in rows]) for b in BINS]
        cells = [*name.split(" | ", 1), *[_cell(r.get("map50")) for r in rows], _cell(_mean([r.get("map50") for r in rows])),
                 _cell(_mean([r.get("map50_95") for r in rows])), _cell(_mean([r.get("cls_accuracy") for r in rows])),
                 *[_cell(b) for b in bins]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
