package cluster

import (
	"testing"

	"github.com/nodegress/nodegress/tests/harness"
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) { harness.Main(m) }
