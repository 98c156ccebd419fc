# dicomframe — two commands set everything up on a fresh machine:
#   make demo   create .venv, install, run the main job on data-samples/ into demo-output/
#   make test   install what the tests need, start the real services, run the whole suite
# Other targets: make install, make bench, make lint, make lab, make clean.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
DEMO   := demo-output

.PHONY: demo test install install-test services bench lint clean samples docs lab

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# installed marker: re-run pip only when pyproject.toml or the C extension changes; the `ocr` extra and the
# tesseract program: pixel clean finds burned-in text with them (see --pixel-clean)
$(VENV)/.installed: pyproject.toml setup.py dicomframe/_cwalk.c | $(BIN)/python
	$(PIP) install -e '.[ocr]'
	@bash scripts/services.sh ocr
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py dicomframe/_cwalk.c | $(BIN)/python
	$(PIP) install -e '.[test,ocr]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	@echo "== scan: data-samples/cohort -> $(DEMO)/scan/"
	$(BIN)/dicomframe scan data-samples/cohort -o $(DEMO)/scan --no-progress
	@echo
	@echo "== damaged and non-DICOM inputs are reported, not crashed on (exit code 1 is expected here)"
	@$(BIN)/dicomframe scan data-samples/odd --no-progress; \
	  echo "(exit code $$? — expected: the files in data-samples/odd are damaged on purpose)"
	@echo
	@echo "== the tables, from Python:"
	$(BIN)/python scripts/demo_summary.py $(DEMO)/scan
	@echo
	@echo "== de-identify data-samples/cohort -> $(DEMO)/deidentified/demo/ (mapping -> $(DEMO)/vault/)"
	@test -f $(DEMO)/project.key || $(BIN)/dicomframe keygen $(DEMO)/project.key
	$(BIN)/dicomframe deidentify data-samples/cohort $(DEMO)/deidentified --key-file $(DEMO)/project.key \
	  --vault $(DEMO)/vault --batch-id demo --audit-log $(DEMO)/audit.jsonl --no-progress
	@echo
	@echo "== audit the de-identified batch: header rules, vault originals, OCR of the pixels (no finding expected)"
	$(BIN)/dicomframe audit $(DEMO)/deidentified/demo --vault $(DEMO)/vault --key-file $(DEMO)/project.key --ocr --no-progress
	@echo
	@echo "== re-identify the first study of the batch, through the vault (this prints PHI)"
	$(BIN)/dicomframe reidentify $(DEMO)/vault --key-file $(DEMO)/project.key --batch-id demo \
	  --audit-log $(DEMO)/audit.jsonl \
	  --study $$($(BIN)/python -c "import json; print(json.load(open('$(DEMO)/deidentified/demo/manifest.json'))['studies'][0]['cloud_study_id'])")
	@echo
	@echo "== the audit log of these runs (hash-chained, no PHI)"
	$(BIN)/dicomframe auditlog verify $(DEMO)/audit.jsonl

# Real services: the S3 server (moto, real HTTP) is started by the test fixtures
# on a free loopback port; services needing system packages are installed here.
services: install-test
	@bash scripts/services.sh

test: install-test services
	$(BIN)/python -m pytest -q -p no:cacheprovider --nbmake tests notebooks

# JupyterLab on loopback only, with the project's venv as the kernel (jupyterlab is not a test dependency)
lab: install
	$(PIP) install -e '.[notebooks]' jupyterlab
	$(BIN)/jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks --no-browser

bench: install-test
	$(BIN)/python benchmarks/bench_scan.py
	$(BIN)/python benchmarks/bench_deidentify.py

# the API reference, generated from the numpydoc docstrings (also built by a test in `make test`)
docs: install-test
	$(BIN)/python -m pdoc --docformat numpy -o site/api dicomframe dicomframe.scanner dicomframe.profiles \
	  dicomframe.planner dicomframe.pipeline dicomframe.pseudonyms dicomframe.keys dicomframe.vault \
	  dicomframe.auditlog dicomframe.phiaudit dicomframe.pixelclean dicomframe.frames dicomframe.rewrite dicomframe.errors \
	  dicomframe.gateway dicomframe.gateway.http dicomframe.gateway.scp dicomframe.distributed
	@echo "API reference: site/api/index.html"

samples: install
	$(BIN)/python scripts/make_data_samples.py --out data-samples

lint: install-test
	$(BIN)/python -m pip install -q ruff mypy
	$(BIN)/ruff check dicomframe tests
	$(BIN)/mypy dicomframe

clean:
	rm -rf $(DEMO) .pytest_cache build dist *.egg-info dicomframe/*.so
