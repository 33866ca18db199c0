# Every target runs with the project's own Node 22 (the `node` devDependency) first on PATH,
# so a machine that only has an older system Node works unchanged.
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: install host-packages build typecheck lint format knip test demo bench clean

install: node_modules/.install-stamp

node_modules/.install-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

# podman, runc, busybox-static, bubblewrap, iproute2, git: for the real-container tests.
host-packages:
	container/install-host-packages.sh

build: install
	tsc -p tsconfig.json

typecheck: install
	tsc -p test/tsconfig.json
	tsc -p shim/tsconfig.json
	tsc -p bench/tsconfig.json

# Biome lints and checks the formatting (config: .ci/biome.jsonc); `make format` rewrites the tree
# (run it after a merge brings in unformatted code).
BIOME_ARGS := --config-path .ci/biome.jsonc src test shim bench
lint: install
	biome check --error-on-warnings $(BIOME_ARGS)

format: install
	biome format --write $(BIOME_ARGS)

# Unused files, exports and dependencies (config: "knip" in package.json).
knip: install
	knip

# The in-process tests run with a coverage floor on src/ (measured at 97.3% lines, 88.8% branches).
# The container tests, and the one test that bounds latency (coverage slows the gateway it times),
# run in a second, plain invocation.
PLAIN_TESTS := $(wildcard test/*podman*.test.ts test/e2e-*.test.ts) test/adversary/freeze.test.ts
COVERED_TESTS := $(filter-out $(PLAIN_TESTS),$(wildcard test/*.test.ts test/adversary/*.test.ts))
COVERAGE := --experimental-test-coverage --test-coverage-include='src/**' --test-coverage-lines=96 --test-coverage-branches=87

test: host-packages build typecheck lint knip
	node --test --test-reporter=spec $(COVERAGE) $(COVERED_TESTS)
	node --test --test-reporter=spec $(PLAIN_TESTS)

demo: build
	node dist/cli/main.js demo --standin

# Gateway overhead side by side with direct, the shim path and Portkey (README.md, "Performance").
# 10,000 live keys need more than 10,000 descriptors: raise the soft limit (to 65536, or to the
# hard limit where that is lower). BENCH_ARGS: --quick, --profile, --duration MS.
bench: build
	ulimit -n 65536 2>/dev/null || ulimit -n $$(ulimit -Hn); node bench/run.mjs $(BENCH_ARGS)

clean:
	rm -rf dist node_modules
