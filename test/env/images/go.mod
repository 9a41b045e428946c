// Test images of the local cluster (test/env/cluster-images.sh). Standard library only.
module underpass.local/testimages

go 1.24
