# rackroute: `make lab` runs the FRR lab, `make test` runs the test suite.
# Both call `make setup`, which is idempotent and fast when nothing is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEB_PKGS := python3-bpfcc python3-venv linux-headers-amd64 bpftool iproute2 frr gobgpd \
            golang-github-osrg-gobgp-dev iptables tcpdump iperf3 curl iputils-ping python3-numpy \
            gcc nftables containernetworking-plugins
KREL := $(shell uname -r)

.PHONY: setup deb headers venv stubs native kube test lint typecheck unit lab lab-down bench clean

setup: deb headers venv stubs native

deb:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# bcc compiles against /lib/modules/$(uname -r)/build; Debian splits the headers in two.
headers:
	@if [ ! -e /lib/modules/$(KREL)/build ]; then \
	  hdr=$$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n 1); \
	  common=$$(ls -d /usr/src/linux-headers-*-common | sort -V | tail -n 1); \
	  mkdir -p /lib/modules/$(KREL); \
	  ln -sfn $$hdr /lib/modules/$(KREL)/build; \
	  ln -sfn $$common /lib/modules/$(KREL)/source; \
	  echo "setup: linked kernel headers $$hdr"; \
	fi

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

# GoBGP gRPC stubs, generated from the installed .proto files (never committed).
stubs: venv
	@$(PY) -m bgp.gobgp.genstubs

# The Maglev table fill in C (bpf/maglev_fill.c), loaded by bpf/maglev.py with ctypes;
# rebuilt only when the source is newer. Without it the fill falls back to numpy/Python.
native: .gen/libmaglev.so

.gen/libmaglev.so: bpf/maglev_fill.c | deb
	@mkdir -p .gen
	gcc -O2 -shared -fPIC -pthread -o $@ $<

# A real Kubernetes API server (etcd and kube-apiserver) and helm, built from the Go
# module proxy into .gen/, for the kube source's and the chart's tests; several minutes
# the first time, then instant.
HELM_VERSION := v3.22.0
kube:
	@if command -v go >/dev/null 2>&1; then bash tests/kube/install-apiserver.sh; \
	  if [ "$$(.gen/helm version --template '{{.Version}}' 2>/dev/null)" != "$(HELM_VERSION)" ]; then \
	    echo "setup: building helm $(HELM_VERSION)"; \
	    GOBIN=$(CURDIR)/.gen CGO_ENABLED=0 go install \
	      -ldflags "-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)" \
	      helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); \
	  fi; \
	else echo "setup: no go toolchain: the tests against a real API server will skip"; fi

lint: setup
	$(VENV)/bin/ruff check controller bgp bpf tests examples
	$(VENV)/bin/mypy --strict controller bgp

unit: setup
	$(VENV)/bin/pytest -q tests/unit

test: setup kube lint
	$(VENV)/bin/pytest -q tests

# The FRR lab: ToR + 3 nodes running the agents + pods + an external client, in network
# namespaces. It stays up for exploring (`.venv/bin/rackroute lab exec NAME -- CMD`);
# `make lab-down` removes it.
lab: setup
	$(VENV)/bin/rackroute --log-level warning lab up
	$(VENV)/bin/rackroute --log-level warning lab show

lab-down: venv
	$(VENV)/bin/rackroute --log-level warning lab down

bench: setup
	$(VENV)/bin/python -m tests.bench

clean:
	rm -rf $(VENV) .gen results
