package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BinDirEnv names a directory holding kube-apiserver, kubectl, kube-proxy
// and etcd; when set, it is used as is and scripts/kube-bins.sh is not run.
const BinDirEnv = "NODEGRESS_KUBE_BIN_DIR"

// binaries the control plane needs; kube-proxy is cached alongside but only
// used by tests that compare against it.
var required = []string{"etcd", "kube-apiserver", "kubectl"}

// buildTimeout bounds a first build under CI: about five minutes on two
// idle cores, more on a busy machine.
const buildTimeout = 40 * time.Minute

var (
	binOnce sync.Once
	binDir  string
	binErr  error
	// binSkip is true when binErr means "not built yet" rather than broken.
	binSkip bool
)

// BinDir returns the directory holding the control plane binaries. When they
// are not cached it skips the test with the reason, except under CI
// (CI=true), where it builds them with scripts/kube-bins.sh: a skip there
// would hide the API-server tests behind a green run.
func BinDir(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binDir, binSkip, binErr = findBins() })
	switch {
	case binErr == nil:
		return binDir
	case binSkip:
		t.Skipf("kubernetes control plane not available: %v", binErr)
	default:
		t.Fatalf("kubernetes control plane: %v", binErr)
	}
	return ""
}

func findBins() (dir string, skip bool, err error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return dir, false, checkBins(dir)
	}
	script, err := script()
	if err != nil {
		return "", false, err
	}
	if dir, err := runScript(script, time.Minute, "--check"); err == nil {
		return dir, false, checkBins(dir)
	}
	if os.Getenv("CI") != "true" {
		return "", true, fmt.Errorf("binaries not cached: run %s once (builds for a few minutes) or set %s", script, BinDirEnv)
	}
	dir, err = runScript(script, buildTimeout)
	if err != nil {
		return "", false, err
	}
	return dir, false, checkBins(dir)
}

func checkBins(dir string) error {
	for _, b := range required {
		if _, err := exec.LookPath(filepath.Join(dir, b)); err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
	}
	return nil
}

// runScript runs kube-bins.sh and returns the directory it prints last.
// Its progress goes to this process's stderr so a long CI build shows life.
func runScript(script string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Stdout = &out
	if len(args) == 0 {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %w", script, strings.Join(args, " "), err)
	}
	lines := strings.Fields(out.String())
	if len(lines) == 0 {
		return "", fmt.Errorf("%s printed no directory", script)
	}
	return lines[len(lines)-1], nil
}

// script finds scripts/kube-bins.sh by walking up from the working
// directory, which `go test` sets to the package's directory.
func script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for range 10 {
		p := filepath.Join(dir, "scripts", "kube-bins.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", errors.New("scripts/kube-bins.sh not found above the working directory")
}
