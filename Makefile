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

## test: every test, host and guest
test: guests
	$(CARGO) test --manifest-path processors/Cargo.toml --target-dir $(GUEST_DIR)
	KILN_GUEST_OUT=$(GUEST_OUT) $(CARGO) test -p kiln

## bench: criterion benchmarks; a summary lands in target/bench-summary.json
bench: guests
	KILN_GUEST_OUT=$(GUEST_OUT) $(CARGO) bench -p kiln

## demo: the stock processors over a scripted conversation
demo: guests
	KILN_GUEST_OUT=$(GUEST_OUT) $(CARGO) run -q -p kiln -- demo

clean:
	$(CARGO) clean
