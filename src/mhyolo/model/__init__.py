"""The multi-head YOLOv5 model: layers, heads, YAML builder, weights I/O.

Importing the package registers every layer and head builder (the type heads and
the decoupled detection head and the mask head live in their own modules and register themselves when
imported here).
"""

from mhyolo.model import decoupled as _decoupled  # noqa: F401  (registers DecoupledDetect)
from mhyolo.model import type_heads as _type_heads  # noqa: F401  (registers ImageTypeHead, ObjectTypeHead)
from mhyolo.model import mask_head as _mask_head  # noqa: F401  (registers MaskHead)
