# podman-migrate. `make help` lists the targets.
SHELL := /bin/bash
GO       ?= go
PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   ?= $(PREFIX)/bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# podman's remote client build: no storage graph drivers that need C headers.
TAGS     := remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp
GOFLAGS_ := -tags "$(TAGS)" -ldflags "-X main.Version=$(VERSION)"
BIN      := bin/podman-migrate
STATE    ?= /tmp/podman-migrate-hosts
FUZZTIME ?= 10s
# Fuzz targets, package:Target (seeds in each package's testdata/fuzz/).
FUZZ     := internal/tarsafe:FuzzVerify internal/ckpt:FuzzOpen internal/dump:FuzzConfig import:FuzzRelocate internal/transfer:FuzzParseReference

.PHONY: all build install uninstall test test-unit test-e2e fuzz setup-host setup-crio demo bench lint completions docs clean help

all: build

build: ## build bin/podman-migrate
	$(GO) build $(GOFLAGS_) -o $(BIN) ./plugin

MANDIR   ?= $(PREFIX)/share/man
LIBEXEC  ?= $(PREFIX)/libexec/podman-migrate
UNITDIR  ?= $(PREFIX)/lib/systemd/system
MANPAGES := $(patsubst docs/%.md,docs/%,$(wildcard docs/*.1.md))
UNITS    := $(wildcard contrib/systemd/*.service)

install: build docs ## install the binary, man pages, completions, drain script and units under $(DESTDIR)$(PREFIX)
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/podman-migrate
	install -D -m 0644 contrib/completions/podman-migrate.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/podman-migrate
	install -D -m 0644 -t $(DESTDIR)$(MANDIR)/man1 $(MANPAGES)
	install -D -m 0755 contrib/podman-migrate-drain $(DESTDIR)$(LIBEXEC)/podman-migrate-drain
	install -D -m 0644 -t $(DESTDIR)$(UNITDIR) $(UNITS)

uninstall: ## remove what install put under $(DESTDIR)$(PREFIX)
	rm -f $(DESTDIR)$(BINDIR)/podman-migrate $(DESTDIR)$(PREFIX)/share/bash-completion/completions/podman-migrate
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MANPAGES)))
	rm -f $(DESTDIR)$(LIBEXEC)/podman-migrate-drain
	-rmdir $(DESTDIR)$(LIBEXEC) 2>/dev/null
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(notdir $(UNITS)))

docs: $(MANPAGES) ## build the man pages (docs/*.1.md) with go-md2man

docs/%.1: docs/%.1.md
	go-md2man -in $< -out $@

setup-host: ## install and configure podman, runc, CRIU >= 4.2 (probed), the registry and the test image (idempotent, root)
	bash contrib/setup-host.sh

setup-crio: ## build CRI-O for the CRI-O tier of the end-to-end tests (idempotent, root)
	bash contrib/setup-crio.sh

test: FUZZTIME = 1000x
test: setup-host setup-crio test-unit fuzz test-e2e ## all tiers: set up the host, unit tests, a short fuzz, end-to-end tests

fuzz: ## run each fuzz target for FUZZTIME (10s), one package at a time
	@set -e; for t in $(FUZZ); do echo "fuzz ./$${t%%:*} $${t#*:} for $(FUZZTIME)"; \
		$(GO) test -tags "$(TAGS)" -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./$${t%%:*}; done

test-unit: ## unit tests (no podman needed)
	$(GO) test -tags "$(TAGS)" -count=1 ./...

test-e2e: build ## end-to-end tests: real podman hosts A, B and C, real CRIU, real registry (root); always stops what it started
	bash tests/run-e2e.sh

demo: setup-host build ## migrate a sample container from host A to isolated host B on this machine
	bash contrib/demo.sh

bench: setup-host build ## podman-migrate, the floor and podman's native path per size (BENCH_SIZES, default "256 1024"); BENCH_LINK=1gbit|10gbit|none: across a shaped link instead
	if [ -n "$(BENCH_LINK)" ]; then bash tests/bench-link.sh; else bash tests/bench.sh; fi

lint: ## go vet, gofmt, shellcheck (golangci-lint when installed)
	$(GO) vet -tags "$(TAGS)" ./...
	$(GO) vet -tags "$(TAGS) e2e" ./tests/...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt needed'; exit 1; }
	shellcheck contrib/*.sh tests/*.sh .ci/run
	@if command -v golangci-lint >/dev/null; then golangci-lint run --build-tags "$(TAGS)"; else echo "golangci-lint not installed: skipped"; fi
	@if command -v staticcheck >/dev/null; then staticcheck -tags "$(TAGS) e2e" ./...; else echo "staticcheck not installed (go install honnef.co/go/tools/cmd/staticcheck@v0.8.2): skipped"; fi

completions: build ## regenerate shell completions
	mkdir -p contrib/completions
	$(BIN) completion bash > contrib/completions/podman-migrate.bash
	$(BIN) completion zsh > contrib/completions/_podman-migrate
	$(BIN) completion fish > contrib/completions/podman-migrate.fish

clean: ## remove build output
	rm -rf bin $(MANPAGES)

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16
