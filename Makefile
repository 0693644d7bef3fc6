# fomm-deploy: one-command set-up, demo and tests. Everything lives in .venv at the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch (pip finds it locally on the reference machines; elsewhere it comes from PyPI).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,dev
# (make test EXTRAS=cpu,dev,ray also runs fomm-serve's Ray Serve test: 52 more packages, about 350 MB.)

.PHONY: setup test demo clean gpu-check

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
	@# The browser test of fomm-serve drives Debian's chromium through chromium-driver; as root on Debian/Ubuntu they
	@# are installed here, elsewhere the test skips and says what to install.
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver >/dev/null || echo "chromium could not be installed: the browser test will skip"; \
	  else echo "no chromium / chromium-driver (Debian: sudo apt-get install chromium chromium-driver): the browser test will skip"; fi; }
	$(BIN)/python -c "import cv2, onnxruntime, torch; print('set-up ok: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| opencv', cv2.__version__)"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# The bundled demo model: FOMM trained by fomm-train on synthetic talking faces (see docs/training.md).
# Its 64x64 cartoon faces are too small for OpenCV's face detector, and they fill the frame already, so the
# demo animates them with --crop centre; --size 256 scales each side-by-side panel up to 256 px (Lanczos) so
# that the result can be seen, and --still writes its middle frame as a PNG; --force lets `make demo` run again.
DEMO_CKPT ?= checkpoints/synthetic-faces.pth.tar
DEMO_CONFIG ?= synthetic-faces

demo: setup
	$(BIN)/python -m fomm_deploy.training.inspect_checkpoint --ckpt $(DEMO_CKPT) --config $(DEMO_CONFIG)
	$(BIN)/fomm-export --ckpt $(DEMO_CKPT) --config $(DEMO_CONFIG) --precision all --out exported/demo --force
	$(BIN)/fomm-compare --onnx exported/demo --backends torch,onnxruntime
	$(BIN)/python -m fomm_deploy.training.synthetic --out exported/demo-faces --videos 2 --size 64 --frames 100 --seed 2024 \
	  --test-fraction 0.5
	$(BIN)/fomm-animate --source "exported/demo-faces/train/id0000#clip0.mp4" \
	  --driving "exported/demo-faces/test/id0001#clip0.mp4" --onnx exported/demo \
	  --out exported/demo-result.mp4 --side-by-side --size 256 --crop centre --still exported/demo-frame.png --force
	@echo "demo: exported/demo-result.mp4 (768x256) shows source | driving | result; exported/demo-frame.png is its middle frame"

# On a GPU machine with PyTorch + CUDA, onnx, onnxruntime and cuda-python (no TensorRT needed): the CUDA layer,
# TrtBackend over a stand-in, fp16 numerics in real half precision and vox-256 latency, written to
# benchmarks/results/gpu-<gpu name>.{json,md}; then the gpu-marked torch-backend tests. Installs nothing: runs
# the machine's python (GPU_PYTHON) on this source checkout; pure-Python extras it may lack (yaml, tqdm, click)
# are taken from GPU_DEPS when that folder exists.
GPU_PYTHON ?= python3
GPU_DEPS ?= .gpu-deps
gpu-check:
	PYTHONPATH="$(CURDIR)/$(GPU_DEPS)$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_PYTHON) -m fomm_deploy.benchmarks.gpu_check \
	  --out benchmarks/results; rc=$$?; \
	PYTHONPATH="$(CURDIR)/$(GPU_DEPS)$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_PYTHON) -m pytest -q -p no:cacheprovider \
	  -m gpu tests/runtime/test_torch_gpu.py || rc=1; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
