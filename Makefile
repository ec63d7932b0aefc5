# xdpcni: two commands do everything on a bare Debian 12 machine (as root):
#   make demo   set up, then show the fast path on a simulated 2-node cluster
#   make test   set up, then run the whole test suite
VENV      ?= .venv
PY        := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup lint test test-unit demo bench bench-tcp install image test-image uninstall clean-test-state fmt help

help:
	@echo "make setup   install everything (idempotent: apt, kernel headers link, venv, bpffs)"
	@echo "make lint    ruff check, ruff format --check, clang-format --dry-run (part of make test)"
	@echo "make test    setup + lint + unit, kernel and end-to-end tests"
	@echo "make demo    setup + 2-node simulated cluster demo (fast path vs host counters)"
	@echo "make bench   setup + side-by-side benchmarks (writes bench/results.json, docs/bench.png)"
	@echo "make bench-tcp  setup + TCP_STREAM/RR/CRR path matrix vs ptp and bridge (~9.5 min; key 'tcp' of bench/results.json, docs/bench-tcp.png)"
	@echo "make install setup + install the CNI binary and config on this node (/opt/cni/bin, /etc/cni/net.d)"
	@echo "make image  container image localhost/xdpcni:VERSION for conf/kubernetes/ (mmdebstrap + podman, offline)"
	@echo "make test-image  run the image under podman on a simulated node: installs the plugin, serves an ADD"

setup:
	@bash scripts/setup.sh

C_SOURCES := $(wildcard bpf/*.c bpf/lib/*.h bench/bpf/*.c)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	clang-format --dry-run -Werror $(C_SOURCES)

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/xdpcnictl demo

bench: setup
	$(PY) -m bench.run

bench-tcp: setup
	$(PY) -m bench.tcp

install: setup
	bash scripts/install.sh

# Not part of `make test`: minutes of package downloads.
image: setup
	bash scripts/build-image.sh

test-image: image
	$(PY) -m pytest -p no:cacheprovider tests/image $(PYTEST_ARGS)

uninstall:
	bash scripts/install.sh --uninstall

# Leftovers of an interrupted run (namespaces and pins carry the per-run "xc" prefix).
clean-test-state:
	@for ns in $$(ip netns list | awk '{print $$1}' | grep -E '^xc[0-9a-f]{6}-'); do ip netns del $$ns; done
	@rm -rf /sys/fs/bpf/xdpcni-test /sys/fs/bpf/xdpcni-bench /run/xdpcni/locks/sys_fs_bpf_xdpcni-test_* /run/xdpcni/sys_fs_bpf_xdpcni-test_* /run/xdpcni/sys_fs_bpf_xdpcni-bench_*

fmt: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	clang-format -i $(C_SOURCES)
