# Two commands set up a clean machine: `make demo` (the main job) and `make test`.
# Both create .venv if missing and install rnnkit with torch pinned by constraints.txt; the
# install compiles the C kernels (src/rnnkit/kernels/csrc, a few seconds with gcc).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rnnkit-installed
EXTRAS ?= test,ko,subword,tasks,keras,onnx,serve

.PHONY: venv test demo bench accuracy lint clean

$(STAMP): pyproject.toml constraints.txt setup.py $(wildcard src/rnnkit/kernels/csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) -m rnnkit.demo

bench: $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/run_all.py

accuracy: $(STAMP)
	$(PY) benchmarks/accuracy.py

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
