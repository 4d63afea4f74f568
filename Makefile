# Two commands from a fresh clone: `make demo` and `make test`. Both create .venv and install what they need.
# PyTorch is pinned here (and only here) to the CPU wheel this machine carries: installed first, so no other
# requirement can make pip fetch a multi-GB CUDA build. pyproject keeps the loose `torch>=2.3` for users.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test docs install bench bench-quick clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[jax,torch,julia,plot,dev,docs,sindy]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pyneuralode spiral --backend jax --iters 1000 --out runs/demo --overwrite

# The documentation site (mkdocs.yml): --strict fails on a dead link or anchor, an unresolved cross-reference or a
# public name without a docstring. `make test` builds it first (a few seconds), into a folder it then removes.
DOCS_ENV := NO_MKDOCS_2_WARNING=1 PYTHONPATH=$(CURDIR)

docs: $(STAMP)
	$(DOCS_ENV) $(VENV)/bin/mkdocs build --strict

# The suite compiles XLA programs at optimisation level 0: most of its time is compiling small programs once, and
# level 0 halves that (23 -> 11 minutes on 2 cores). Results differ by round-off only (arithmetic fused differently);
# a test that compares two programs bit for bit says so. Benchmarks and user runs keep XLA's default level.
TEST_XLA_FLAGS ?= --xla_backend_optimization_level=0

test: $(STAMP)
	$(DOCS_ENV) $(VENV)/bin/mkdocs build --strict --site-dir .docs-check && rm -rf .docs-check
	XLA_FLAGS="$(TEST_XLA_FLAGS) $(XLA_FLAGS)" PYTHON_JULIAPKG_OFFLINE=yes $(PY) -m pytest -n 2 $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) runs .pytest_cache site .docs-check
