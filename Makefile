# Set-up: `make demo` and `make test` each create .venv if missing and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NPROCS ?= 2
# extra pip arguments for torch, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for the
# CPU-only build on Linux, where PyPI's torch is the CUDA build (several GB)
TORCH_PIP_ARGS ?=

.PHONY: demo test install bench clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned; the package itself asks for torch>=2.2
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m ctp_nipype.cli.demo demo_output

test: $(STAMP)
	$(PY) -m pytest -n $(NPROCS) --doctest-modules ctp_nipype tests

bench: $(STAMP)
	$(PY) benchmarks/bench_svd.py

clean:
	rm -rf demo_output build *.egg-info .pytest_cache
