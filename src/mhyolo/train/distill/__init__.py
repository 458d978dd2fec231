"""Learning from a frozen model: a teacher and the loss terms that learn from it (feature imitation,
response KD), and the term that keeps the COCO model's ball score (`coco_ball`).

Importing this package registers its terms (`imitation`, `response_kd`, `coco_ball`) with
`mhyolo.train.terms`.
"""

from mhyolo.train.distill import coco_ball, imitation, response_kd  # noqa: F401 - registers the terms
from mhyolo.train.distill.teacher import Teacher

__all__ = ["Teacher"]
