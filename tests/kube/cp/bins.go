package cp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// ErrNotCached means the binaries have not been built yet.
var ErrNotCached = errors.New("kubernetes control plane binaries not cached")

// FindBins returns the directory holding etcd, kube-apiserver and kubectl:
// $NODEGRESS_KUBE_BIN_DIR when set, else the cache of scripts/kube-bins.sh
// (found above the working directory). When they are not cached it builds
// them if build is set (minutes, progress on standard error), else returns
// an error wrapping ErrNotCached that says how to build them.
func FindBins(build bool) (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return dir, checkBins(dir)
	}
	script, err := script()
	if err != nil {
		return "", err
	}
	if dir, err := runScript(script, time.Minute, "--check"); err == nil {
		return dir, checkBins(dir)
	}
	if !build {
		return "", fmt.Errorf("%w: run %s once (builds for a few minutes) or set %s", ErrNotCached, script, BinDirEnv)
	}
	dir, err := runScript(script, buildTimeout)
	if err != nil {
		return "", err
	}
	return dir, checkBins(dir)
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
