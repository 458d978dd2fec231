"""Distillation: a frozen teacher and the loss terms that learn from it (feature imitation, response KD).

Importing this package registers its terms (`imitation`, `response_kd`) with `mhyolo.train.terms`.
"""

from mhyolo.train.distill import imitation, response_kd  # noqa: F401 - registers the terms
from mhyolo.train.distill.teacher import Teacher

__all__ = ["Teacher"]
