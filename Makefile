# Two commands do all set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
NODE_STAMP := js/node_modules/.installed
BUNDLE := tscope_widgets/static/sensitivity_explorer.js
JS_SOURCES := js/build.mjs $(wildcard js/src/*.js js/src/lib/*.js)

.PHONY: demo test bench lint clean

# Front ends: npm packages from the lock file, then one esbuild bundle per widget.
$(NODE_STAMP): js/package.json js/package-lock.json
	npm --prefix js ci --no-audit --no-fund
	touch $@

$(BUNDLE): $(NODE_STAMP) $(JS_SOURCES)
	npm --prefix js run build

# torch is pinned (constraints.txt): an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt $(BUNDLE)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tscope demo

# Browser tests drive Debian's Chromium (test tools cannot download browsers here).
test: $(STAMP) $(BUNDLE)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	node --test js/test/
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/sensitivity.py
	$(PY) benchmarks/widget_repaint.py
	$(PY) benchmarks/curvature.py
	$(PY) benchmarks/landscape.py

lint: $(STAMP)
	$(PIP) install -q -c constraints.txt ruff
	$(VENV)/bin/ruff check tscope_widgets tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache js/node_modules tscope_widgets/static
