# Two entry points, each self-contained on a fresh machine:
#   make test   set up .venv and run the test suite
#   make demo   set up .venv and run the end-to-end chain on shipped defaults
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: test demo install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build of torch first: otherwise pip resolves torch to a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet "jax[cpu]"
	$(PY) -m pip install --quiet -e ".[test,minuit]"
	touch $(STAMP)

install: $(STAMP)

# One pytest worker per core (pytest-xdist), each test file on one worker so that its
# module fixtures are built once: the suite is mostly single-threaded XLA compilation.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash experiments/demo.sh

clean:
	rm -rf $(VENV) demo_out
