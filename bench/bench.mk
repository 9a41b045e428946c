# The tunnel benchmark (bench/tunnel-bench.ts). Included from the Makefile:
#   include bench/bench.mk
# `make bench` takes about 10 minutes and rewrites docs/benchmarks.md; `make bench-soak`
# takes 10 minutes more and rewrites only the soak section of that file.
# BENCH_ARGS passes options through, e.g. make bench BENCH_ARGS="--only bulk,rtt --no-docs".

BENCH_ARGS ?=
# 10,000 idle streams need about that many descriptors in each process on the path.
BENCH_ULIMIT := ulimit -n 65535 2>/dev/null || ulimit -n $$(ulimit -Hn) 2>/dev/null || true

.PHONY: bench bench-setup bench-soak bench-quick bench-ha

bench-setup: ## install what the tunnel benchmark compares against: OpenSSH, iperf3, wrk, redis, PostgreSQL (Debian), chisel (Go module)
	bash bench/setup.sh

bench: build bench-setup ## Underpass vs direct TCP, ssh -L, chisel on loopback: prints a table, rewrites docs/benchmarks.md
	$(BENCH_ULIMIT); node dist/bench/tunnel-bench.js $(BENCH_ARGS)

bench-soak: build ## 10 minutes of steady load through Underpass: RSS at start and end (soak section of docs/benchmarks.md)
	$(BENCH_ULIMIT); node dist/bench/tunnel-bench.js --only soak $(BENCH_ARGS)

bench-quick: build ## the tunnel benchmark at smoke-test sizes (direct TCP + Underpass only, under a minute)
	node dist/bench/tunnel-bench.js --quick --no-docs $(BENCH_ARGS)

bench-ha: build test-deps testenv-bins ## HA events under load in the local cluster (root, ~12 min): failed/broken per event, table into docs/ha.md
	bash test/cluster-real/bench-ha.sh $(BENCH_ARGS)
