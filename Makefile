# vimigrate: every entry point a person or CI uses. The scripts behind the
# targets are idempotent, so any target can run on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help deps lab-up lab-down lab-status python demo lint test test-guest bench bench-memory bench-group soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install system packages and CRIU >= 4.2 (root, Debian 12)
	bash scripts/lab/install-deps.sh

lab-up: ## start provider-a, provider-b and the DNS server; write .lab/lab.json
	bash scripts/lab/up.sh

lab-down: ## stop what lab-up started and remove its namespaces, bridges and mounts
	bash scripts/lab/down.sh

lab-status: ## show the lab's providers, DNS server and images
	bash scripts/lab/status.sh

python: ## build the engine into .venv (pip install .) with the Cloudify CLI
	bash scripts/python-env.sh

demo: ## the main job on the embedded default: lab, plugin, blueprint install
	bash scripts/demo.sh

lint: ## the lint gate: cargo fmt --check, clippy -D warnings, rustdoc, ruff, mypy, shellcheck
	bash scripts/lint.sh

test: ## every test: cargo, pytest, the lab-based end-to-end tests, then test-guest
	bash scripts/test.sh

test-guest: ## the guest provider's tests: boots the lab's qemu guest (own kernel, CPU, CRIU; reused) and runs tests/guest
	bash scripts/test-guest.sh

bench: ## migration downtime benchmarks on the lab against Docker, Podman and CRIU alone, then bench-memory and bench-group (not a test: prints figures and ratios, writes scripts/bench/results/<date>*.*)
	bash scripts/python-env.sh && bash scripts/lab/up.sh && bash scripts/bench/install-deps.sh
	.venv/bin/python scripts/bench/migration_bench.py --sizes 10,100,500 --runs 3 --out scripts/bench/results
	$(MAKE) bench-memory
	$(MAKE) bench-group

bench-memory: ## memory modes and compression on shaped links (unshaped, 1 Gbit/s, 200 Mbit/s) against CRIU alone and Podman 4.3 and newest, then pre-copy in the guest (part of bench; writes scripts/bench/results/<date>-memory*.*)
	bash scripts/python-env.sh && bash scripts/lab/up.sh && bash scripts/bench/install-deps.sh
	.venv/bin/python scripts/bench/memory_bench.py --mib 500 --runs 3 --out scripts/bench/results
	bash scripts/lab/guest.sh up
	.venv/bin/python scripts/bench/guest_pre_copy_bench.py --mib 48 --runs 3 --out scripts/bench/results

bench-group: ## a whole VI under one freeze against one container after another: the example VI and a three-tier one, kept and remapped addresses, an end-to-end client every 10 ms (part of bench; writes scripts/bench/results/<date>-group.*)
	bash scripts/python-env.sh && bash scripts/lab/up.sh && bash scripts/bench/install-deps.sh
	.venv/bin/python scripts/bench/group_bench.py --runs 3 --out scripts/bench/results

soak: ## 20 live migrations back and forth of the example VI (both containers as one group, under one freeze) with a client writing throughout (not part of make test: about 5 minutes)
	bash scripts/python-env.sh && bash scripts/lab/up.sh
	.venv/bin/python scripts/soak.py --migrations 20

clean: lab-down ## stop the lab and remove build outputs
	rm -rf target .venv .lab
