"""mhyolo: one multi-head YOLOv5 model that finds objects and says what kind each one is."""

__version__ = "0.1.0"
