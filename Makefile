# `make bench` and `make test` set themselves up on a fresh machine: each creates .venv on first use
# and installs what it needs. `make bench`: ONNX Runtime and TVM, untuned (the quickstart; its zoo models are
# written without PyTorch); `make test` and CI: every extra (TVM's tuner, the zoo's PyTorch route to compare
# with, the GPU half's CUDA compiler, LoadGen, Dask, the test tools).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BENCH_EXTRAS := ort,tvm
ALL_EXTRAS   := cpu,models,dev,cuda-compile,loadgen,fleet
BENCH_STAMP  := $(VENV)/.installed-bench
STAMP  := $(VENV)/.installed-stamp

.PHONY: install bench test check benchmark corpus doctor gpu-check clean

# PyTorch (for `make test`: the zoo's PyTorch route, compared with the default one) from its CPU wheels where
# this machine reaches them: PyPI's torch is the multi-GB CUDA build, and
# the CPU index's 2.13.0+cpu satisfies the pin first. Where it is unreachable (this project's VMs, which
# hold the CPU build locally), pip uses its usual indexes.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX = $$($(BIN)/python -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5); print('--extra-index-url $(TORCH_CPU_INDEX)')" 2>/dev/null)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BENCH_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[$(BENCH_EXTRAS)]'
	touch $(BENCH_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) -e '.[$(ALL_EXTRAS)]'
	touch $(STAMP) $(BENCH_STAMP)

install: $(STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/bench run configs/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the fast tier for the edit-test loop (under 2 minutes: no tuning, no LoadGen, no cluster, no end-to-end
# CLI runs; tests/conftest.py lists what is slow); `make test`, which CI runs, is the whole suite
check: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

benchmark: $(STAMP)
	$(BIN)/python -m pytest -q benchmarks --benchmark-only --benchmark-columns=median,mean,stddev,rounds
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.stability
	$(BIN)/python -m benchmarks.verdicts
	$(BIN)/python -m benchmarks.fixed_cost
	$(BIN)/python -m benchmarks.cache_and_int8
	$(BIN)/python -m benchmarks.loadgen
	$(BIN)/python -m benchmarks.fleet
	$(BIN)/python -m benchmarks.zoo_matrix

# real ONNX files other exporters wrote (15, from PyPI packages; benchmarks/corpus/manifest.yaml) through
# ONNX Runtime and TVM at fp32, fp16 and int8; prints ok / outside tolerance / refused / other per cell
corpus: $(STAMP)
	$(BIN)/python benchmarks/corpus/run.py

# TVM for CUDA (sm_90), compiled here without a GPU, bundled with a runtime-only TVM for Python 3.12:
# copy build/gpu-bundle to a CUDA machine (numpy is all it needs) and run the command printed last.
gpu-check: $(STAMP)
	rm -rf build/gpu-bundle
	$(BIN)/bench bundle configs/gpu_check.yaml -o build/gpu-bundle --python 3.12
	@echo "on the CUDA machine: python3 build/gpu-bundle/run.py; python3 -m benchmarks.gpu_torch_baseline --compile"
	@echo "with TensorRT or onnxruntime-gpu installed there: bench run configs/tvm_vs_trt.yaml (rows say gpu, trt_typing, placement, trtexec_ratio)"
	@echo "  then: bench explain results/<run_id> --a backend=tvm_cuda --b backend=tensorrt (per-layer profiles: coverage and mapping in the report)"

doctor: $(STAMP)
	$(BIN)/bench doctor

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
