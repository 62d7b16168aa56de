# pyvswitch: `make demo` and `make test` set up a fresh Debian machine (as root) and run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the demo and the tests need (installed only when missing).
DEBS := iproute2 iputils-ping tcpdump procps python3-venv openvswitch-switch dpdk-dev qemu-system-x86 busybox-static \
	linux-libc-dev
# ... and anything only the benchmarks need (Open vSwitch, the comparison, is already above).
BENCH_DEBS := openvswitch-switch-dpdk
PYTEST_ARGS ?= -q

.PHONY: all debs bench-debs venv demo test lint bench clean clean-cache faucet-venv

all: venv .numba-stamp

debs:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench-debs:
	@$(MAKE) --no-print-directory debs DEBS="$(BENCH_DEBS)"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install -q -e '.[test,bench]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import numba, numpy, pyroute2, pytest, hypothesis"
	touch $@

venv: debs $(VENV)/.installed

# numba's cache tracks a kernel's own source file only, not the constants it imports from
# other modules (classifier/keys.py, ...): drop every cached kernel when any source changes.
SOURCES := $(shell find classifier backends vswitch bench -name '*.py' 2>/dev/null)
# Compiling every kernel takes about 20 s: do it here, at install, not in the daemon's first start.
.numba-stamp: $(SOURCES) | venv
	@find classifier backends vswitch bench \( -name '*.nbi' -o -name '*.nbc' \) -delete
	$(PY) -m vswitch.warmup
	@touch $@

clean-cache:
	find classifier backends vswitch bench \( -name '*.nbi' -o -name '*.nbc' \) -delete
	rm -f .numba-stamp

# The real Faucet controller for tests/test_faucet.py, in a venv of its own: it pins its own os-ken and eventlet.
FAUCET_VENV := .venv-faucet
$(FAUCET_VENV)/.installed:
	@test -x $(FAUCET_VENV)/bin/python || python3 -m venv $(FAUCET_VENV)
	$(FAUCET_VENV)/bin/python -m pip install -q 'faucet>=1.10,<1.11' 2>&1 | grep -v "^WARNING: Location" || true
	$(FAUCET_VENV)/bin/faucet --version
	touch $@

faucet-venv: debs $(FAUCET_VENV)/.installed

demo: venv .numba-stamp
	$(VENV)/bin/pyvswitch demo

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint .numba-stamp faucet-venv
	$(PY) -m pytest $(PYTEST_ARGS) tests

bench: venv bench-debs .numba-stamp
	$(PY) -m bench classify
	$(PY) -m bench forward --port-type system --against ovs,linux-bridge
	$(PY) -m bench forward --port-type tap --against ovs,linux-bridge
	$(PY) -m bench openflow --against ovs

clean:
	rm -rf $(VENV) $(FAUCET_VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
