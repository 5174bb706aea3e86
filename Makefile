# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use and reuse it afterwards (the stamp file tracks pyproject.toml).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
TORCHREC := torchrec==1.8.0

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,bench,signing]'
	$(VENV)/bin/pip install --quiet --no-deps $(TORCHREC)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recsys demo

test: $(STAMP)
	$(VENV)/bin/ruff check recsys tests benchmarks serving
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .demo
