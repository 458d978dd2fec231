"""Run by the DataLoader-workers test in a process of its own.

A DataLoader with worker processes installs a process-wide SIGCHLD handler in torch
that stays after the loader is gone; inside a pytest-xdist worker it then reacts to
every later child process of other tests. Running the check in a spawned process
keeps that handler out of the test worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mhyolo.data.augment import AugmentConfig
from mhyolo.data.dataset import YoloDataset, build_dataloader, collate_fn
from mhyolo.data.spec import load_data_spec

IMGSZ = 320  # as in tests/test_dataset.py


def main(data_yaml: str) -> None:
    dataset = YoloDataset(load_data_spec(Path(data_yaml)), "train", IMGSZ, augment=AugmentConfig(), seed=1)
    loader = build_dataloader(dataset, batch_size=4, shuffle=False, workers=2, seed=0)
    assert loader.persistent_workers
    seen = []
    for epoch, mosaic in ((1, True), (2, True), (2, False)):
        dataset.set_epoch(epoch)
        dataset.set_mosaic(mosaic)
        batches = list(loader)
        expected = collate_fn([dataset[i] for i in range(len(dataset))])
        images = torch.cat([b.images for b in batches])
        assert torch.equal(images, expected.images), f"epoch {epoch} mosaic {mosaic}: workers disagree"
        assert sum(b.targets.shape[0] for b in batches) == expected.targets.shape[0]
        seen.append(images)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
