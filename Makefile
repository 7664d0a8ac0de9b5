# gpulab: set-up, checks and the rehearsal lab. `make help` lists the targets.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Host tools: guests (QEMU, debootstrap, mkfs.ext4 -d), test stand-ins (dpkg-deb, gpg, zstd),
# the models bench's baseline (rsync), the Vagrant rehearsal (vagrant-libvirt brings vagrant;
# libvirt-daemon-system brings libvirtd, virsh and iptables; dnsmasq-base, only recommended,
# is the DHCP and DNS of libvirt's networks).
APT_PACKAGES := debootstrap mmdebstrap qemu-system-x86 qemu-utils e2fsprogs zstd gnupg \
	dpkg-dev openssh-client iproute2 ca-certificates chromium rsync \
	vagrant-libvirt libvirt-daemon-system dnsmasq-base
LAB_HOSTS ?= 2

.PHONY: help setup apt venv lint test test-fast test-room lab lab-down bench

help:
	@echo "make setup      host packages + virtualenv with gpulab (editable) and dev tools"
	@echo "make test       lint, then unit, plan, integration (QEMU guests) and chroot tests"
	@echo "make test-fast  lint, unit and plan tests only (no guests, no root)"
	@echo "make test-room  the room cache and swarm guest test (not in make test: budget)"
	@echo "make lab        boot $(LAB_HOSTS) local Debian 12 guests and run deploy/gpu_host.py on them"
	@echo "make lab-down   stop the lab guests"
	@echo "make bench      the benchmarks: test fleet, seeded models vs rsync, room cache, swarm"

setup: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(BIN)/gpulab

$(BIN)/gpulab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

lint: venv
	$(BIN)/ruff check gpulab tests bench deploy inventories
	$(BIN)/mypy gpulab

test-fast: lint
	$(BIN)/pytest tests/unit tests/plan

test: setup lint
	$(BIN)/pytest tests/unit tests/plan tests/integration tests/chroot

test-room: setup
	$(BIN)/pytest tests/quarantine/test_room.py

lab: setup
	$(BIN)/gpulab lab up --hosts $(LAB_HOSTS)
	$(BIN)/pyinfra -y .lab/inventory.py deploy/gpu_host.py

lab-down: venv
	$(BIN)/gpulab lab down

bench: setup
	$(BIN)/python bench/bench_fleet.py
	$(BIN)/python bench/bench_models.py
	$(BIN)/python bench/bench_room_cache.py
	$(BIN)/python bench/bench_swarm.py
