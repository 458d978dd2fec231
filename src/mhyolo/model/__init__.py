"""The multi-head YOLOv5 model: layers, heads, YAML builder, weights I/O.

Importing the package registers every layer and head builder (the type heads
live in their own module and register themselves when imported here).
"""

from mhyolo.model import type_heads as _type_heads  # noqa: F401  (registers ImageTypeHead, ObjectTypeHead)
