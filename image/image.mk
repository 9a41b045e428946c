# The Underpass image (image/build.sh, docs/image.md). Included from the Makefile:
#   include image/image.mk
# CLUSTER_CONTAINERD: the containerd `make image` imports into when one answers there (default: the
# local cluster's, test/env/README.md); e.g. make image CLUSTER_CONTAINERD=/run/containerd/containerd.sock

CLUSTER_CONTAINERD ?= $(CURDIR)/.cluster/containerd/containerd.sock

.PHONY: image

image: deps ## build the OCI image (image/out/underpass-<version>.oci.tar; no Docker) and import it into the local cluster if it runs
	@archive="$$(bash image/build.sh)" && \
	  bash image/import.sh --if-running --address "$(CLUSTER_CONTAINERD)" "$$archive" >/dev/null
