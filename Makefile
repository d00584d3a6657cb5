# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
# glibc's allocator spends a large share of a big step in page faults without these
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296

.PHONY: install browser demo test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, pinned to the CPU build available here; the constraints file keeps every later
# install (extras included) from resolving a newer torch and gigabytes of CUDA packages. The sweep
# backends' extras (ray, slurm) and devinterp (diagnose) come with the test extra: their tests run in
# the suite, not skip.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,ray,slurm,diagnose]"
	@touch $(STAMP)

install: $(STAMP)

browser:
	@if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null ) \
	    || echo "could not install chromium: the page tests will skip (fail under CI=true)"; \
	fi

demo: install
	$(BIN)/icldyn run linreg-lsa

# The layer contracts (pyproject.toml, [tool.importlinter]), then the default suite
# (pytest -m "not slow"); exit code 5 (no tests collected) is not a failure.
# The page tests drive Debian's chromium through chromium-driver (selenium); they are installed with
# apt-get when missing (as root, or with sudo). Without them the page tests skip, except under CI=true.
test: install browser
	$(BIN)/lint-imports
	@rc=0; $(BIN)/python -m pytest -m "not slow" -q -p no:cacheprovider || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# Everything, including the end-to-end quick presets (minutes each).
test-all: install browser
	@rc=0; $(BIN)/python -m pytest -q -p no:cacheprovider || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

bench: install
	$(BIN)/icldyn bench --json bench.json

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
