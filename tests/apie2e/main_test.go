// Package apie2e runs nodegress agents against a real Kubernetes API server
// (tests/kube): a client and three nodes on one L2 segment, the control
// plane in the switch namespace where every node reaches it on the wire,
// and one agent per node with the ServiceAccount and RBAC of manifests/.
// Everything the agents serve is created through the API, as a cluster's
// controllers would. The tests need root and the control plane binaries
// (`make kube-bins`); without them they skip, except under CI=true where
// they fail.
package apie2e

import (
	"testing"

	"github.com/nodegress/nodegress/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
