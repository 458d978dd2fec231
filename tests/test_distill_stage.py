"""The distillation stage: evaluate and filter on hand-made scores, and a tiny pipeline that trains the
teacher, the student with and without distillation, and ships the one the rule picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mhyolo.cli import main
from mhyolo.errors import ConfigError
from mhyolo.pipeline.config import DistillConfig
from mhyolo.eval.results import fitness as fitness_of
from mhyolo.pipeline.distill import decide


def _rows(values: dict[str, list[float]]) -> dict[str, dict]:
    """Rows whose typed mAPs give exactly these fitness values (fitness = 0.1 mAP50 + 0.9 mAP50-95)."""
    return {f"distill/{group}-s{seed}": {"weights": f"{group}-{seed}.safetensors", "map50": 0.0, "map50_95": 0.0,
                                         "typed_map50": value, "typed_map50_95": value}
            for group, fitness in values.items() for seed, value in enumerate(fitness)}


def test_fitness_prefers_the_typed_map() -> None:
    assert fitness_of({"map50": 1.0, "map50_95": 1.0, "typed_map50": 0.5, "typed_map50_95": 0.3}) == \
        pytest.approx(0.1 * 0.5 + 0.9 * 0.3)
    assert fitness_of({"map50": 0.5, "map50_95": 0.3}) == pytest.approx(0.32)


def test_a_gain_beyond_the_seed_spread_keeps_the_distilled_model() -> None:
    config = DistillConfig(enabled=True, seeds=[0, 1], variants={"imitation": {}, "response_kd": {}})
    decision = decide(_rows({"student": [0.40, 0.42], "imitation": [0.46, 0.47], "response_kd": [0.41, 0.43]}),
                      config)
    assert decision.chosen == "imitation" and decision.weights == "imitation-1.safetensors"  # its best seed
    assert decision.groups["student"]["mean"] == pytest.approx(0.41)
    assert decision.groups["imitation"]["spread"] == pytest.approx(0.01)
    assert "imitation beats the undistilled student" in decision.reason and "spread 0.0200" in decision.reason


def test_a_gain_within_the_seed_spread_keeps_the_student() -> None:
    config = DistillConfig(enabled=True, seeds=[0, 1, 2], variants={"imitation": {}})
    decision = decide(_rows({"student": [0.40, 0.45, 0.42], "imitation": [0.44, 0.45, 0.43]}), config)
    # imitation's mean 0.44 beats 0.4233 by 0.0167, but the student's seeds differ by 0.05
    assert decision.chosen == "student" and decision.weights == "student-1.safetensors"
    assert "no distillation beats the undistilled student by more than the noise" in decision.reason


def test_one_seed_says_that_noise_cannot_be_ruled_out() -> None:
    decision = decide(_rows({"student": [0.40], "imitation": [0.401]}),
                      DistillConfig(enabled=True, variants={"imitation": {}}))
    assert decision.chosen == "imitation" and "one seed" in decision.reason


def test_missing_scores_and_reserved_names_are_errors() -> None:
    with pytest.raises(ConfigError, match="no scores for distill/imitation-s0"):
        decide(_rows({"student": [0.4]}), DistillConfig(enabled=True, variants={"imitation": {}}))
    with pytest.raises(ConfigError, match="reserved"):
        DistillConfig(enabled=True, variants={"student": {}})


def test_per_type_table_is_the_mean_and_spread_over_seeds() -> None:
    from mhyolo.pipeline.distill_tables import per_type_table

    def row(total: float, basket: float, tennis: float) -> dict:
        return {"typed_map50": total, "typed_map50_95": total / 2,
                "typed_per_type": {"basketball": {"ap50": basket, "ap50_95": basket / 2},
                                   "tennis-ball": {"ap50": tennis, "ap50_95": None}}}

    rows = {"distill/teacher": row(0.9, 0.8, 1.0), "distill/student-s0": row(0.6, 0.4, 0.8),
            "distill/student-s1": row(0.7, 0.6, 0.8), "distill/kd-s0": row(0.8, 0.7, 0.9)}
    decision = {"groups": {"student": {"runs": ["distill/student-s0", "distill/student-s1"]},
                           "kd": {"runs": ["distill/kd-s0"]}}}
    headers, table = per_type_table(rows, decision)
    assert headers == ["model", "metric", "all", "basketball", "tennis-ball"]
    assert table[0] == ["teacher", "AP50", "0.900", "0.800", "1.000"]
    assert table[2] == ["student", "AP50", "0.650 (0.100)", "0.500 (0.200)", "0.800 (0.000)"]
    assert table[3] == ["student", "AP50-95", "0.325 (0.050)", "0.250 (0.100)", "–"]  # no AP: a dash, not 0
    assert table[4] == ["kd", "AP50", "0.800", "0.700", "0.900"]


@pytest.mark.slow
def test_tiny_distillation_pipeline(shared: Path, tmp_path: Path, official_weights: Path) -> None:
    recipe = {"classes": ["basketball", "football", "tennis-ball"], "seed": 0, "val_fraction": 0.25,
              "sources": [{"name": "seed", "path": str(shared / "data" / "seed_balls"),
                           "classes": {"basketball": "basketball", "football": "football",
                                       "tennis-ball": "tennis-ball"}, "sample": 4}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    fast = {"epochs": 1, "batch": 4, "workers": 0, "close_mosaic": 0}
    pipeline = {"recipe": "recipe.yaml", "imgsz": 128, "latency_runs": 2,
                "detector": {"enabled": False}, "head": {"enabled": False}, "joint": {"enabled": False},
                "distill": {"enabled": True, "teacher": {"hyp": "multihead", "overrides": {**fast, "epochs": 2}},
                            "student": {"hyp": "multihead", "overrides": fast},
                            "variants": {"imitation": {"imitation": {}}, "both": {"imitation": {}, "response_kd": {}}},
                            "seeds": [0]},
                "benchmark": {"enabled": False}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(tmp_path / "pipeline.yaml"), "--out", str(run), "--quiet"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert set(report["models"]) == {"distill/teacher", "distill/student-s0", "distill/imitation-s0",
                                     "distill/both-s0"}
    decision = report["distill"]
    assert report["final_stage"] == "distill" and decision["chosen"] in ("student", "imitation", "both")
    assert (run / "model.safetensors").read_bytes() == Path(decision["weights"]).read_bytes()
    assert set(decision["groups"]) == {"student", "imitation", "both"} and decision["reason"]
    with (run / "distill" / "both-s0" / "results.csv").open() as handle:
        header = handle.readline().strip().split(",")
    assert {"train/imitation", "train/kd_cls", "train/kd_box"} <= set(header)
    assert report["models"]["distill/teacher"]["latency_ms"] > 0
    page = (run / "report.html").read_text()
    assert '<h2 id="distill">' in page and "distill/student-s0" in page and decision["reason"] in page
    assert "Typed AP per ball type" in page
    assert set(report["models"]["distill/imitation-s0"]["typed_per_type"]) == {"basketball", "football",
                                                                               "tennis-ball"}
    markdown = (run / "report.md").read_text()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in markdown.splitlines() if line.startswith("|")]
    assert "## Distillation (evaluate and filter)" in markdown and any(row[:2] == ["both", "AP50-95"] for row in cells)
