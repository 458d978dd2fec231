"""Run under torchrun by the DDP test: trains one epoch and records this rank's weights digest."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from mhyolo.data.augment import AugmentConfig
from mhyolo.train.config import OptimConfig, TrainConfig
from mhyolo.train.trainer import Trainer


class RecordDigest:
    def after_epoch(self, trainer: Trainer, epoch: int, row: dict[str, float]) -> None:
        digest = hashlib.sha256()
        # parameters, not buffers: each rank's last forward updates its own BatchNorm statistics
        # (DDP broadcasts rank 0's buffers at the start of every forward)
        for key, value in sorted(trainer.module.named_parameters()):  # the student and any term's layers
            digest.update(key.encode())
            digest.update(value.detach().cpu().to(torch.float64).numpy().round(6).tobytes())
        out = Path(sys.argv[2]) / f"rank{trainer.dist.rank}.json"
        out.write_text(json.dumps({"digest": digest.hexdigest(), "batches": len(trainer.loader), "row": row}))


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    extra_term = sys.argv[3] if len(sys.argv) > 3 else None  # a registered term (helpers/terms.py or distillation)
    teacher = sys.argv[4] if len(sys.argv) > 4 else None
    torch.set_num_threads(1)
    config = TrainConfig(data=str(data), weights="yolov5n.pt", epochs=1, imgsz=128, batch=2, workers=0,
                         close_mosaic=0, optim=OptimConfig(warmup_epochs=0.0), augment=AugmentConfig())
    if extra_term:
        import helpers.terms  # noqa: F401 - registers the term

        config.objective.terms = {extra_term: {"weight": 0.5}}
        config.teacher = teacher
    Trainer(config, out / "run", hooks=[RecordDigest()], progress=False).run()


if __name__ == "__main__":
    main()
