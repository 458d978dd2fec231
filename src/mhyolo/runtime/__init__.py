"""A model file made runnable: loaded through the format table (`load`), composed with its crop
classifier and input-size rule into one `InferenceModel` (`model`), which the front doors, `val` and
the benchmark use. Above `infer`, `eval`, `classify` and `deploy`, which it composes."""
