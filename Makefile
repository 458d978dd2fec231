# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
# Both create the virtual environment at .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mhyolo-installed
SHARED ?= ../shared
DEMO_OUT ?= runs/demo

.PHONY: install demo test bench clean rknn-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[train,deploy,dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the default data (configs/pipeline/demo.yaml: the balanced ball set,
# detector -> type head -> joint -> every export and INT8 format benchmarked -> report), then the
# final model draws its detections and types on the validation images.
# Without ../shared (or MHYOLO_SHARED), `mhyolo data fetch` first downloads the COCO weights and the
# ball datasets into $MHYOLO_HOME/shared (SHA-256 checked); with them in place it does nothing.
demo: $(STAMP)
	$(BIN)/mhyolo data fetch --if-missing
	-@$(MAKE) --no-print-directory rknn-env || echo "RKNN environment not created: the RKNN row will say so"
	$(BIN)/mhyolo pipeline --config configs/pipeline/demo.yaml --out $(DEMO_OUT)
	$(BIN)/mhyolo predict $(DEMO_OUT)/data/images/val --weights $(DEMO_OUT)/model.safetensors --out $(DEMO_OUT)/predictions

# The RKNN environment is attempted first so that the RKNN tests run too; where it cannot be
# made (no wheel for this platform), those tests are skipped and say why.
test: $(STAMP)
	-@$(MAKE) --no-print-directory rknn-env || echo "RKNN environment not created: the rknn tests will be skipped"
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/latency.py

# rknn-toolkit2 pins numpy<=1.26.4, onnx<=1.18 and protobuf 4.x, so it cannot share .venv: it gets its
# own environment that mhyolo reaches through a worker subprocess (src/mhyolo/deploy/rknn.py).
# The toolkit goes in with --no-deps because its declared requirements clash with this working set.
RKNN_VENV ?= .venv-rknn
RKNN_STAMP := $(RKNN_VENV)/.rknn-ready
rknn-env: $(RKNN_STAMP)

$(RKNN_STAMP):
	test -x $(RKNN_VENV)/bin/python || $(PYTHON) -m venv $(RKNN_VENV)
	$(RKNN_VENV)/bin/pip install --quiet --disable-pip-version-check 'setuptools<81' torch==2.13.0 numpy==1.26.4 \
		onnx==1.18.0 protobuf==4.25.4 onnxruntime==1.26.0 opencv-python-headless==4.11.0.86 \
		scipy psutil ruamel.yaml tqdm fast-histogram
	$(RKNN_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps rknn-toolkit2==2.5.0
	$(RKNN_VENV)/bin/python -c "from rknn.api import RKNN; print('rknn-toolkit2 ready in $(RKNN_VENV)')"
	touch $(RKNN_STAMP)

clean:
	rm -rf $(VENV) $(RKNN_VENV) runs .pytest_cache
