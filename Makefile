# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON     ?= python3
VENV       ?= .venv
# The install step pins torch so this machine takes its local CPU wheel; a GPU user
# overrides it: `make demo TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126'`.
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
PYTEST_ARGS ?=
# all: every gate's extra; engine: what src/model needs; dev: the test tools; trainers:
# Lightning, transformers, MLflow, TensorBoard, whose real run dirs the tests check (leave
# it out with `make test EXTRAS=all,engine,dev`: those tests skip)
EXTRAS     ?= all,engine,dev,trainers
# The engine (src/model) is this checkout's code, not part of the installed package: a
# .pth file puts src/ on the venv's path so `python -m model` and torchrun work.
ENGINE_PTH  = $(PY) -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'mlgates-checkout-engine.pth').write_text(str(pathlib.Path('src').resolve()) + '\\n')"
DEMO_RUN   ?= runs/demo
# Python caches bytecode unless told not to; a machine that sets PYTHONDONTWRITEBYTECODE
# (this one does) makes every pytest session of the tests recompile, and pytest re-rewrite,
# every plugin module it loads: seconds per session, hundreds of sessions. Tests that need
# no bytecode written set it themselves.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-fast bench example clean

install: $(VENV)/.installed

# the package with the test tools and the test-only trainers: what make test needs
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(ENGINE_PTH)
	touch $@

# the package alone: all make demo needs (a newcomer's first command skips the trainers)
$(VENV)/.installed-core: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[all,engine]"
	$(ENGINE_PTH)
	touch $@

demo: $(VENV)/.installed-core
	$(PY) -m model train --config configs/default.yaml --run-dir $(DEMO_RUN) --fresh
	$(PY) -m pytest acceptance/ --run-dir $(DEMO_RUN) -p no:cacheprovider -q || true
	$(VENV)/bin/mlgates verdict $(DEMO_RUN)

# the slowest tests are named at the end, so a slow newcomer is seen in CI's log; worksteal:
# a worker that runs out takes half of the other's queue (tests last 0.01-90 s; with the
# default scheduling one worker sat idle for 71-200 s at the end)
test: install
	$(PY) -m pytest -n 2 --dist worksteal --durations=15 $(PYTEST_ARGS)

# everything but the tests marked slow (real training, fresh venvs, trainers): the edit loop
test-fast: install
	$(PY) -m pytest -n 2 --dist worksteal -m "not slow" --durations=10 $(PYTEST_ARGS)

# examples/wine_project as a user runs it: the wheel built from this checkout, installed with
# the project's requirements.txt into the project's own venv; trains the plain run and gates it
EXAMPLE      = examples/wine_project
EXAMPLE_PY   = $(abspath $(EXAMPLE))/.venv/bin
example:
	rm -rf build dist
	$(PYTHON) -m pip wheel --no-deps --quiet . -w dist
	rm -rf build
	$(PYTHON) -m venv $(EXAMPLE)/.venv
	$(EXAMPLE_PY)/python -m pip install --quiet -r $(EXAMPLE)/requirements.txt dist/pytest_mlgates-*.whl $(TORCH_SPEC)
	cd $(EXAMPLE) && $(EXAMPLE_PY)/python -m wine.train_plain --run-dir runs/plain
	cd $(EXAMPLE) && $(EXAMPLE_PY)/pytest acceptance/plain.gates.yaml --run-dir runs/plain -q || true
	cd $(EXAMPLE) && $(EXAMPLE_PY)/mlgates verdict runs/plain

bench: install
	$(PY) bench/engine_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache build dist *.egg-info src/*.egg-info $(EXAMPLE)/.venv $(EXAMPLE)/runs
