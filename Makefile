# Everything runs from a local virtual environment that these targets create.
# Only Python (>= 3.10), pip and make are needed on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch is pinned first so that pip does not pull a multi-GB CUDA build
# on machines without a GPU. Override on a GPU machine: make install TORCH="torch==2.13.0"
TORCH  ?= torch==2.13.0

.PHONY: install install-dev demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

# tests/test_fid_protocol.py checks our resize against clean-fid's own function, which needs
# only torch, numpy and PIL: --no-deps keeps out the torchvision clean-fid lists, whose PyPI
# build need not match the pinned CPU torch (then `import transformers` fails on torchvision::nms).
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH)"
	$(BIN)/pip install -q --no-deps "clean-fid==0.1.35"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## make demo: faces from the embedded default model, a small evaluation and an HTML report
demo: install
	$(BIN)/facegen demo --out demo-out

## make test: the whole test suite (CPU, tiny presets, real faces from ../shared/data when present)
test: install-dev
	$(BIN)/python -m pytest -q

## make bench: every benchmark in bench/ (minutes each; results in bench/results/*.json)
bench: install-dev
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) demo-out .pytest_cache
