# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# Both create the virtual environment at .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mhyolo-installed
SHARED ?= ../shared
DEMO_OUT ?= runs/demo

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,deploy]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the default data (configs/pipeline/demo.yaml: the balanced ball set,
# detector -> type head -> joint, report), then the final model draws its detections and types on the validation images.
demo: $(STAMP)
	$(BIN)/mhyolo pipeline --config configs/pipeline/demo.yaml --out $(DEMO_OUT)
	$(BIN)/mhyolo predict $(DEMO_OUT)/data/images/val --weights $(DEMO_OUT)/model.safetensors --imgsz 320 --out $(DEMO_OUT)/predictions

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/latency.py

clean:
	rm -rf $(VENV) runs .pytest_cache
