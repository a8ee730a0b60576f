package kube

import (
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/nodegress/nodegress/tests/kube/cp"
)

// BinDirEnv names a directory holding kube-apiserver, kubectl, kube-proxy
// and etcd; when set, it is used as is and scripts/kube-bins.sh is not run.
const BinDirEnv = cp.BinDirEnv

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// BinDir returns the directory holding the control plane binaries. When they
// are not cached it skips the test with the reason, except under CI
// (CI=true), where it builds them with scripts/kube-bins.sh: a skip there
// would hide the API-server tests behind a green run.
func BinDir(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binDir, binErr = cp.FindBins(os.Getenv("CI") == "true") })
	switch {
	case binErr == nil:
		return binDir
	case errors.Is(binErr, cp.ErrNotCached):
		t.Skipf("kubernetes control plane not available: %v", binErr)
	default:
		t.Fatalf("kubernetes control plane: %v", binErr)
	}
	return ""
}
