# openaim: `make demo` runs the platform with demo studies; `make test` runs the whole suite.
# Both do all set-up first (Debian packages, a virtualenv, npm assets) and are fast the second time.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
APT_PACKAGES := orthanc orthanc-dicomweb orthanc-gdcm orthanc-webviewer dcmtk dicom3tools chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages demo test lint clean

setup: system-packages $(STAMPS)/venv $(STAMPS)/npm

# Debian packages: installed only when one is missing (checked every time; no stale stamp).
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# A real OpenID provider (npm oidc-provider) that the OIDC sign-in tests start.
OIDC_PROVIDER := tests/viewer/access/oidc_provider

$(STAMPS)/npm: frontend/package.json frontend/package-lock.json $(OIDC_PROVIDER)/package.json $(OIDC_PROVIDER)/package-lock.json
	@mkdir -p $(STAMPS)
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(BIN)/openaim demo

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(STAMPS) var test-artifacts
