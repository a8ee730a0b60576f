// Package e2e runs the real nodegress binary in network namespaces and sends
// real traffic through it: a client, one or two nodes on an L2 segment, and
// pods behind the nodes. Every test needs root; without it they skip, except
// under CI=true where they fail.
package e2e

import (
	"testing"

	"github.com/nodegress/nodegress/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
