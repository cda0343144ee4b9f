# The README's two commands: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup clean bench-smoke test-matrix matrix-one redis mutation

# The release matrix (`make test-matrix`): the suite on each torch below, every release in its
# own venv cached outside the repo (reused between runs and clones; created on first use).
# The default wheels are CUDA builds (~2 min each to install); they run on CPU here.
# PIP_CONSTRAINT pins the release for those installs only (it also lifts a machine-wide
# cap such as /etc/xdg/pip's, which stays untouched).
MATRIX ?= 2.11.0 2.15.0
MATRIX_CACHE ?= $(HOME)/.cache/inductor_sm_override/venvs
# Heaviest framework tests, and those of this project's own tools (benchmark smoke runs, the
# demo, the docs' examples, the report and CLI, the start-up hook's install paths and child
# processes, the layout check), which drive torch only through code the rest of the suite
# already runs on every release: run by `make test` (default release) only; skipped with a
# printed reason in the matrix (see tests/matrix_plugin.py). MATRIX_SKIP= runs them too.
MATRIX_SKIP ?= test_hf_models.py test_recipes.py test_benchmarks_smoke.py test_demo.py \
  test_docs_examples.py test_env_hook.py test_report_cli.py test_report_robust.py \
  test_cli_errors.py test_architecture.py
# Skipped on one release only: the newest skips the cross-process Redis and torchrun fleet
# tests (each starts 4-8 Python processes; ~5 min there), which run on 2.13 and 2.11, and
# the distributed-autotuning torchrun test: torch 2.15's gloo can deadlock inside Inductor's
# all_gather_object (docs/versions.md, "Known torch problems").
MATRIX_SKIP_2.15.0 ?= test_fleet_redis.py test_fleet_torchrun.py test_fleet_distributed.py
# pytest-xdist workers for `make test` and each matrix release (TEST_JOBS=0: one process).
# Most of a test's time is a child process starting or a compile waiting on g++, so two
# workers on 2 cores take about 0.4x the serial time (docs/versions.md).
TEST_JOBS ?= 2

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 10), "python >= 3.10 needed"'
	@$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# A real redis-server for the remote-cache tests (tests/redis_server.py starts and stops its
# own on a free port): Debian's package, installed only where it is missing and this user
# can (root, apt-get). Elsewhere those tests are skipped with the reason.
redis:
	@command -v redis-server >/dev/null 2>&1 \
	  || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	         { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	             --no-install-recommends redis-server >/dev/null; } \
	         || echo "redis-server could not be installed: the Redis tests will be skipped"; \
	       else echo "redis-server not installed (needs root and apt-get): the Redis tests will be skipped"; fi; }

test: $(STAMP) lint redis
	$(PY) -m pytest -q -n $(TEST_JOBS) --durations=15

demo: $(STAMP)
	$(PY) -m inductor_sm_override demo

clean:
	rm -rf $(VENV) build dist *.egg-info

test-matrix: redis
	@set -e; for v in $(MATRIX); do $(MAKE) --no-print-directory matrix-one TORCH_RELEASE=$$v; done

# One release: create or refresh its cached venv, then the suite (ruff runs in `make test`).
MVENV = $(MATRIX_CACHE)/torch-$(TORCH_RELEASE)
matrix-one:
	@test -n "$(TORCH_RELEASE)" || { echo "TORCH_RELEASE=X.Y.Z needed"; exit 2; }
	@mkdir -p $(MATRIX_CACHE)
	@test -x $(MVENV)/bin/python || $(PYTHON) -m venv $(MVENV)
	@echo "torch==$(TORCH_RELEASE)" > $(MVENV)/constraints.txt
	@$(MVENV)/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "$(TORCH_RELEASE)")' 2>/dev/null \
	  || PIP_CONSTRAINT=$(MVENV)/constraints.txt $(MVENV)/bin/python -m pip install --quiet "torch==$(TORCH_RELEASE)"
	@key="$$(cat pyproject.toml setup.py | sha256sum | cut -c1-16) $(CURDIR)"; \
	  test "$$(cat $(MVENV)/.iso-installed 2>/dev/null)" = "$$key" \
	  || { PIP_CONSTRAINT=$(MVENV)/constraints.txt $(MVENV)/bin/python -m pip install --quiet -e '.[dev]' \
	       && echo "$$key" > $(MVENV)/.iso-installed; }
	@echo "== torch $(TORCH_RELEASE) ($(MVENV)) =="
	ISO_MATRIX_SKIP="$(MATRIX_SKIP) $(MATRIX_SKIP_$(TORCH_RELEASE))" PYTHONPATH=$(CURDIR)/tests $(MVENV)/bin/python -m pytest -q \
	  -n $(TEST_JOBS) --durations=15 -p no:cacheprovider -p matrix_plugin


# GPU acceptance check (benchmarks/gpu_check.py, issue 15). Needs no venv and installs nothing:
# on a GPU machine `make gpu-check OUT=$OUT` runs the source tree with its python3 (this
# checkout's .venv python is used when it exists, unless PYTHON is given). DRY_RUN=1: the same
# code on the CPU with tiny sizes (CI); PLAN=1: the estimates only; LIMIT_S: the self-stop.
.PHONY: gpu-check
OUT ?= benchmarks/results
LIMIT_S ?= 360
_on = $(filter-out 0 no false off,$(1))
GPU_CHECK_PY = $(if $(filter command line environment,$(origin PYTHON)),$(PYTHON),$(if $(wildcard $(PY)),$(PY),$(PYTHON)))
gpu-check:
	PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(GPU_CHECK_PY) benchmarks/gpu_check.py \
	  --out "$(OUT)" --limit-s $(LIMIT_S) $(if $(call _on,$(DRY_RUN)),--dry-run) \
	  $(if $(call _on,$(PLAN)),--plan) $(GPU_CHECK_ARGS)

# Mutation testing (docs/mutation.md; not in CI: 2-4 h on 2 cores). mutmut is pinned and put into
# the venv here only (not in the dev extra: `make test` and CI never install it); what it
# mutates and which fast in-process tests it runs: pyproject's [tool.mutmut]. Results are kept
# in mutants/ (a rerun retests only what changed; rm -rf mutants for a fresh run).
# MUTANTS="inductor_sm_override.core.budget*" restricts the run to mutant-name globs.
MUTMUT_VERSION ?= 3.8.1
MUTANTS ?=
mutation: $(STAMP)
	@$(VENV)/bin/mutmut --version 2>/dev/null | grep -q ' $(MUTMUT_VERSION)$$' \
	  || $(PY) -m pip install --quiet "mutmut==$(MUTMUT_VERSION)"
	$(VENV)/bin/mutmut run --max-children $(or $(filter-out 0,$(TEST_JOBS)),1) $(MUTANTS)
	@$(VENV)/bin/mutmut results
	@$(PY) -c 'import json, pathlib, collections; from mutmut.stats import status_by_exit_code as s; \
	  t = collections.Counter(); \
	  rows = [(str(m.relative_to("mutants"))[:-5], collections.Counter(s[c] for c in json.loads(m.read_text())["exit_code_by_key"].values())) for m in sorted(pathlib.Path("mutants").rglob("*.py.meta"))]; \
	  [t.update(c) or print(f"{p:42} " + "  ".join(f"{k} {v}" for k, v in sorted(c.items()))) for p, c in rows]; \
	  k = t["killed"] + t["timeout"]; n = k + t["survived"] + t["suspicious"]; sv = t["survived"]; \
	  print(f"all: killed {k} of {n} tested ({100 * k / max(n, 1):.1f} %), survived {sv}; not counted:", t["no tests"], "without a test,", t["not checked"], "not run")'
