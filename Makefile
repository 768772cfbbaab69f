# `make bench` and `make test` set themselves up on a fresh machine: they create .venv on first use
# and install the package with the CPU backends, the model zoo's torch and the test tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install bench test benchmark doctor clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[cpu,models,dev]'
	touch $(STAMP)

install: $(STAMP)

bench: $(STAMP)
	$(BIN)/bench run configs/quickstart.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

benchmark: $(STAMP)
	$(BIN)/python -m pytest -q benchmarks --benchmark-only --benchmark-columns=median,mean,stddev,rounds
	$(BIN)/python -m benchmarks.overhead
	$(BIN)/python -m benchmarks.stability
	$(BIN)/python -m benchmarks.cache_and_int8

doctor: $(STAMP)
	$(BIN)/bench doctor

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
