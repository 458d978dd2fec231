"""`mhyolo adapt`: a model adapted to a user's own footage without labelling it.

A teacher (the given model, with strong inference settings) labels every target image; boxes it
is sure of become pseudo-labels, boxes it is unsure of become ignore regions (no objectness loss
either way); a student fine-tuned from the same weights on those (plus any labelled data) is the
adapted model. The pseudo-labels are a plain YOLO dataset a person can correct and give back.

Passes, each resumable (`done.json`): frames (a video sampled at `fps`) -> teacher (predictions
and the keep threshold) -> pseudo (the dataset) -> student (training) -> evaluation -> report.
"""
