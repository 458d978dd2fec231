"""Runtimes behind the predictor's `InferenceBackend` interface: ONNX Runtime, OpenVINO (and the
shared reading of an exported graph's outputs in `base`). Which one a file gets is the format table's
choice (`mhyolo.runtime.load.load_backend`)."""
