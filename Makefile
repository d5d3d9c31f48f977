# Hangar. The two commands: `make dev` and `make test` (as root).
SWIFT ?= swift
IMAGES ?= images
HANGAR := .build/debug/hangar
export HANGAR_IMAGES := $(CURDIR)/$(IMAGES)

.PHONY: dev tour test build deps images bench release clean

deps:
	@bash scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

images: $(IMAGES)/busybox/.built $(IMAGES)/python/.built $(IMAGES)/collab/.built $(IMAGES)/python-repl/.built

# An image is rebuilt only when its recipe changes; building twice is a no-op.
$(IMAGES)/busybox/.built: rootfs/busybox/build.sh | deps
	bash rootfs/busybox/build.sh $(IMAGES)/busybox
	touch $@

$(IMAGES)/python/.built: rootfs/python/build.sh rootfs/lib/debian-mirror.sh | deps
	bash rootfs/python/build.sh $(IMAGES)/python
	touch $@

# The examples' images: the python image with examples/NAME/server.py at /app (policies/NAME.toml).
$(IMAGES)/collab/.built $(IMAGES)/python-repl/.built: $(IMAGES)/%/.built: examples/%/server.py rootfs/app/build.sh $(IMAGES)/python/.built
	bash rootfs/app/build.sh $(IMAGES)/python examples/$* $(IMAGES)/$*
	touch $@

# The suite on this host's kernel, then the cgroup v2 driver in a QEMU (TCG) guest.
test: build images
	$(SWIFT) test --no-parallel
	bash scripts/qemu-v2-test.sh

# The whole system in one process on loopback: controller, drone and proxy, state in ./.hangar.
dev: build images
	$(HANGAR) dev

# A short tour of the sandbox: hangar run, policy and doctor.
tour: build images
	@bash scripts/demo.sh $(HANGAR)

bench: release images
	.build/release/hangar bench spawn --runs 500

clean:
	rm -rf .build $(IMAGES)

# Boots a throwaway QEMU (TCG) guest with a Debian cloud kernel and a pure cgroup v2 hierarchy,
# and runs scripts/qemu/selfcheck.c in it (the environment the cgroup v2 driver needs).
# As root; the first run installs qemu and caches the kernel in /var/cache/hangar/qemu.
.PHONY: qemu-check
qemu-check:
	@bash scripts/qemu/check.sh
