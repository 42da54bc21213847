# netmon build. `make` builds the BPF object the Python package loads; the
# hatchling build hook (hatch_build.py) runs the same recipe through `make`
# when a wheel or sdist is built.

CLANG ?= clang
LLVM_STRIP ?= llvm-strip
BPFTOOL ?= bpftool
PYTHON ?= python3
VENV ?= .venv
ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/' -e 's/ppc64le/powerpc/' -e 's/s390x/s390/')

BPF_OBJ := netmon/_bpf/xdp_monitor.bpf.o
BUILD ?= build
# -ffile-prefix-map: the object (its BTF line info) names no build directory, so builds
# in two places (a checkout, a container's /src) give the same bytes.
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -Ibpf \
	-ffile-prefix-map=$(CURDIR)=.

# Debian packages: what building the wheel needs, and what running and testing add.
BUILD_DEPS := clang llvm libbpf-dev bpftool make python3 python3-venv python3-pip
APT_DEPS := $(BUILD_DEPS) libbpf1 iproute2 iputils-ping tcpdump ethtool util-linux tshark tmux \
	nfdump softflowd prometheus nftables dropwatch sqlite3 curl openssl systemd chromium

.PHONY: all vmlinux deps deps-build wheel venv install test fuzz test-unit test-kernels test-userlands \
	wheel-container bench clean

all: $(BPF_OBJ)

$(BPF_OBJ): bpf/xdp_monitor.bpf.c bpf/xdp_monitor.h bpf/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(LLVM_STRIP) -g $@ 2>/dev/null || true

# Other programs (the XDP_PASS baseline, test programs) into $(BUILD)/.
$(BUILD)/%.bpf.o: bpf/%.bpf.c bpf/xdp_monitor.h bpf/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/%.bpf.o: tests/bpf/%.bpf.c bpf/xdp_monitor.h bpf/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# The per-CPU flow table variant the bench compares netmon's shared one with.
$(BUILD)/xdp_monitor_percpu.bpf.o: bpf/xdp_monitor.bpf.c bpf/xdp_monitor.h bpf/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -DNM_FLOWS_PERCPU -c $< -o $@

$(BUILD)/%.bpf.o: bench/%.bpf.c bpf/vmlinux.h
	@mkdir -p $(dir $@)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

# Regenerate the kernel type header from the running kernel's BTF.
vmlinux:
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

# System packages (Debian 12); needs root.
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_DEPS)

deps-build:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BUILD_DEPS)

# dist/netmon-<version>-py3-none-any.whl, BPF object inside.
wheel:
	scripts/build-wheel.sh dist

# System packages, then a virtualenv with netmon (editable) and the test tools.
venv: deps
	$(MAKE) install

install: $(BPF_OBJ)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'

# The flow tests offer traffic with the bench's generator (build/xdp_tx.bpf.o).
test: venv $(BUILD)/xdp_tx.bpf.o
	$(VENV)/bin/python -m pytest -ra tests

# The fuzzers' long run (the tests run short ones): capture files, totals databases,
# and expressions against libpcap. SEED=N replays a run; findings go to build/.
FUZZ_ARGS ?= --expressions 10000 --captures 200000 --totals 3000
fuzz: venv
	$(VENV)/bin/python -m tests.fuzz $(FUZZ_ARGS) $(if $(SEED),--seed $(SEED))

test-unit: install
	$(VENV)/bin/python -m pytest -ra -m 'not kernel' tests

clean:
	rm -rf build dist netmon/_bpf/*.o

# The kernel tests on Debian's 5.10, 6.1 and 6.12 kernels under qemu, and on this one.
KERNEL_DEPS := qemu-system-x86 kmod busybox-static
VIRTME_NG := virtme-ng==1.42
# The wheel in Debian 11, 12 and 13 root filesystems (Proxmox VE 7, 8, 9), on this kernel.
USERLAND_DEPS := mmdebstrap
test-userlands: venv
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(USERLAND_DEPS)
	rm -rf $(BUILD)/userlands/dist
	scripts/build-wheel.sh $(BUILD)/userlands/dist
	$(VENV)/bin/python scripts/userlands.py --wheel $(BUILD)/userlands/dist/netmon-*.whl

# Dockerfile.build built for real with podman (a base image made with mmdebstrap), and
# its wheel checked against scripts/build-wheel.sh's.
CONTAINER_DEPS := podman mmdebstrap
wheel-container:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CONTAINER_DEPS)
	$(PYTHON) scripts/container-wheel.py

test-kernels: venv
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(KERNEL_DEPS)
	$(VENV)/bin/pip install -q '$(VIRTME_NG)'
	$(VENV)/bin/python scripts/kernel-matrix.py --python $(abspath $(VENV))/bin/python \
		$(KERNEL_MATRIX_ARGS)

# Speed, side by side with tcpdump and an empty XDP_PASS program; never part of `test`.
BENCH_DEPS := tcpdump tshark iftop softflowd nfdump
bench: install $(BUILD)/xdp_tx.bpf.o $(BUILD)/xdp_pass.bpf.o $(BUILD)/tc_pass.bpf.o \
		$(BUILD)/xdp_monitor_percpu.bpf.o $(BUILD)/xdp_flow_floor.bpf.o
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEPS)
	$(VENV)/bin/python -m bench.run
