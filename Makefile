# Two entry points: `make run` (default scenario) and `make test`. Both build .venv once;
# a second call reinstalls nothing unless pyproject.toml or this Makefile changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

# MovieLens-100k as the recbole 1.2.1 wheel ships it (its terms forbid redistribution, so it is
# fetched here, never committed) and the world fitted to it, refitted when the fitting code changes.
DATA := data
ML_WHEEL := $(DATA)/recbole-1.2.1-py3-none-any.whl
ML_WORLD := $(DATA)/worlds/ml-100k
FIT_CODE := recsim/recsys/worldfit.py recsim/recsys/datasets.py recsim/experiments/fitted.py

# Test workers (pytest-xdist), one per core; each runs torch on one thread (tests/conftest.py).
# A test file (or notebook) runs on one worker, so its tests share what a worker caches (the LLM
# base policy); the notebooks go first, as the longest files. The processes tests start and the
# notebooks' kernels run on one thread each too (more threads than cores slow torch down).
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(max(1, len(os.sched_getaffinity(0))))")

.PHONY: setup run test lint bench clean data figure

setup: $(STAMP)

data: $(ML_WORLD)/card.json

$(ML_WHEEL): | $(STAMP)
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --dest $(DATA) recbole==1.2.1

$(ML_WORLD)/card.json: $(ML_WHEEL) $(FIT_CODE) $(STAMP)
	rm -rf $(ML_WORLD)
	$(VENV)/bin/recsim world fit $(ML_WHEEL) --preset movielens --out $(ML_WORLD)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) fbgemm-gpu-cpu==1.8.0
	$(PIP) --no-deps torchrec==1.8.0
	$(PIP) tensordict torchmetrics==1.0.3 tqdm pyre-extensions
	$(PIP) -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/recsim run feedback-loop --seeds 3

test: $(STAMP) data
	$(VENV)/bin/ruff check recsim towers scenarios tests docs
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile \
		--nbmake --nbmake-timeout=1200 notebooks tests --doctest-modules recsim towers

# The README's figure, from a fresh default run (3 seeds).
figure: $(STAMP)
	$(PY) docs/figure.py

bench: $(STAMP)
	$(VENV)/bin/recsim bench

clean:
	rm -rf $(VENV) runs mlflow.db mlartifacts $(DATA)
