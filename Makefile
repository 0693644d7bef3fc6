# fomm-deploy: one-command set-up, demo and tests. Everything lives in .venv at the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch (pip finds it locally on the reference machines; elsewhere it comes from PyPI).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,dev

.PHONY: setup test demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	@# opencv-python needs the system's libGL; install it when missing (Debian/Ubuntu, as root).
	@$(BIN)/python -c "import cv2" 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq libgl1 libglib2.0-0 >/dev/null; \
	  else echo "OpenCV cannot load: install your system's libGL (Debian/Ubuntu: sudo apt-get install libgl1)"; exit 1; fi; }
	$(BIN)/python -c "import cv2, onnxruntime, torch; print('set-up ok: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| opencv', cv2.__version__)"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# Until a trained demo model ships (issue #6), the demo uses the small upstream golden checkpoint.
DEMO_CKPT ?= tests/data/golden-small/checkpoint.pth.tar
DEMO_CONFIG ?= tiny-test

demo: setup
	$(BIN)/python -m training.inspect --ckpt $(DEMO_CKPT) --config $(DEMO_CONFIG)
	$(BIN)/fomm-export --ckpt $(DEMO_CKPT) --config $(DEMO_CONFIG) --precision all --out exported/demo --force
	$(BIN)/fomm-compare --onnx exported/demo --backends torch,onnxruntime
	$(BIN)/python -m runtime.samples --out exported/demo-driving.mp4
	$(BIN)/fomm-animate --source runtime/assets/astronaut-face.jpg --driving exported/demo-driving.mp4 \
	  --onnx exported/demo --out exported/demo-result.mp4 --side-by-side --adapt-scale

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
