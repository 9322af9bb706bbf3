# The two contract commands: `make serve` and `make test`. Both build .venv from scratch if needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Constraints apply to every pip call, build environments included (see constraints.txt for why).
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test venv system-deps serve-deps model-repository demo-model perf bench clean help

help:
	@echo "make serve   - set up .venv, build model_repository/ from the demo checkpoint, run Triton + web page"
	@echo "make test    - set up .venv and Chromium, run the test suite"
	@echo "make demo-model - retrain the demo checkpoints: B0 self-blends (~10 min on a CUDA GPU, ~1 h on CPU), then the edits (~1 h on CPU), the CNN, calibration and reports"
	@echo "make bench   - full benchmark run (~8 min on 2 idle cores)"

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	# torch first, on its own: with it installed nothing else can pull a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0 torchvision==0.28.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

# Debian packages serve needs: nginx in front of Triton's HTTP port (bounds request bodies, cuts slow clients),
# and HAProxy in front of the replicas of `serve --replicas N` (health checks, failover; docs/replicas.md).
SERVE_PACKAGES := nginx-light haproxy
# ... and those the tests drive besides: Chromium for the Playwright browser tests (Playwright's own browser
# download cannot work offline) and docker-compose 1.29 to validate docker-compose.yml (no Docker engine here).
# fonts-noto-color-emoji: headless Chromium has no emoji font otherwise (the page's 👋 renders as a box).
SYSTEM_PACKAGES := $(SERVE_PACKAGES) chromium docker-compose fonts-noto-color-emoji
install_missing_debian_packages = @missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

system-deps:
	$(call install_missing_debian_packages,$(SYSTEM_PACKAGES))

serve-deps:
	$(call install_missing_debian_packages,$(SERVE_PACKAGES))

model-repository: venv
	$(BIN)/deepfake-edge export --if-missing

serve: venv serve-deps model-repository
	$(BIN)/deepfake-edge serve

test: venv system-deps
	$(BIN)/python -m pytest -q

# The demo's default synthetic set also draws on photos in Debian packages (the catalogue, with the package
# names, is training/debian_photos.py): photo diversity is what lets the detector generalise to unseen photos.
demo-model: venv
	@set -e; packages=$$($(BIN)/python -c "from deepfake_edge.training.debian_photos import DEBIAN_PHOTOS; print(*DEBIAN_PHOTOS)"); \
	missing=$$(for p in $$packages; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian photo packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(BIN)/python -m deepfake_edge.training.demo

bench: venv model-repository
	$(BIN)/deepfake-edge bench

perf: venv model-repository
	$(BIN)/deepfake-edge perf --start-server

clean:
	rm -rf $(VENV) build *.egg-info
