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

# predict with the COCO weights, build the balanced ball dataset, fine-tune a one-class
# "ball" detector (short profile), score it, and draw its detections on the validation images.
demo: $(STAMP)
	$(BIN)/mhyolo predict $(SHARED)/images --weights yolov5n.pt --out $(DEMO_OUT)/coco-predictions
	$(BIN)/mhyolo data build configs/balls.yaml --out $(DEMO_OUT)/data --overwrite
	rm -rf $(DEMO_OUT)/detector
	$(BIN)/mhyolo train --data $(DEMO_OUT)/data/data.yaml --hyp configs/demo.yaml --out $(DEMO_OUT)/detector
	$(BIN)/mhyolo val --data $(DEMO_OUT)/data/data.yaml --weights $(DEMO_OUT)/detector/weights/best.safetensors --imgsz 320
	$(BIN)/mhyolo predict $(DEMO_OUT)/data/images/val --weights $(DEMO_OUT)/detector/weights/best.safetensors --imgsz 320 --out $(DEMO_OUT)/ball-predictions

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/latency.py

clean:
	rm -rf $(VENV) runs .pytest_cache
