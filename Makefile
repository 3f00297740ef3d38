# Set-up and everyday commands. Each target installs what it needs on a fresh Debian 12.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# OCR, PDF rendering, the fonts the sample/fixture generator draws with, and the
# PDF/A-1b validator (Apache PDFBox Preflight) the tests run on every output, and
# Chromium, in which a test looks at the Prefect dashboard, SoftHSM, the PKCS#11
# token a test signs with, and PostgreSQL, the production Prefect database a test runs workers on.
# jbig2dec decodes the JBIG2 images many scanners write into their PDFs.
APT_PACKAGES := python3-venv tesseract-ocr tesseract-ocr-vie tesseract-ocr-eng tesseract-ocr-osd \
	poppler-utils jbig2dec fonts-dejavu-core fonts-liberation2 \
	openjdk-17-jre-headless libpdfbox2-java libactivation-java libjaxb-api-java chromium softhsm2 postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT := demo-out

.PHONY: demo test bench samples setup system-packages clean

# The nightly flow on the embedded folder store: sample_scans/ is dropped as a station's
# batch, then processed into the archive and the manual-review area.
# Records are signed with a demo agency certificate from a throwaway CA made on first use,
# and then checked with `digitize verify` against that CA's root.
DEMO_CA := $(DEMO_OUT)/demo-ca
DEMO_ENV := DIGITIZE_SERVICE_INBOX=$(DEMO_OUT)/inbox DIGITIZE_SERVICE_ARCHIVE=$(DEMO_OUT)/archive \
	DIGITIZE_SERVICE_REVIEW=$(DEMO_OUT)/review PREFECT_SERVER_ANALYTICS_ENABLED=false \
	DIGITIZE_SIGNING_PKCS12=$(DEMO_CA)/agency.p12 DIGITIZE_SIGNING_PASSPHRASE=demo \
	DIGITIZE_SIGNING_TRUST_ROOTS='["$(DEMO_CA)/root.pem"]' DIGITIZE_OUTPUT_AGENCY='UBND tỉnh Nghệ An (demo)'

demo: setup
	@[ -f $(DEMO_CA)/agency.p12 ] || $(BIN)/digitize demo-ca $(DEMO_CA)
	$(DEMO_ENV) $(BIN)/digitize drop sample_scans --station demo-station --operator demo
	$(DEMO_ENV) $(BIN)/digitize run
	$(DEMO_ENV) $(BIN)/digitize verify $$(find $(DEMO_OUT)/archive $(DEMO_OUT)/review -name '*.pdf' -not -path '*/previous/*' | sort)

test: setup
	$(BIN)/python -m pytest

# OCRmyPDF and Ghostscript are only the benchmark's yardstick; the product needs neither.
bench: setup
	@dpkg -s ghostscript >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq ghostscript
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_memory.py
	$(BIN)/python bench/bench_split.py $(if $(wildcard ../shared/corpus/drawings),--corpus-drawings ../shared/corpus/drawings)
	$(BIN)/python bench/bench_flow.py
	$(BIN)/python bench/bench_load.py
	$(BIN)/python bench/bench_signing.py
	$(BIN)/python bench/bench_scanner_pdfs.py $(if $(wildcard ../shared/corpus/scanner_pdfs),--corpus ../shared/corpus)

samples: setup
	$(BIN)/python sample_scans/make_samples.py

setup: system-packages $(VENV)/.installed

system-packages:
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		echo "Installing Debian packages: $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
