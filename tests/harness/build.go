// Package harness runs the real nodegress binary against netns topologies:
// it builds the binaries once per test binary, starts and stops agents and
// pod servers inside namespaces, writes standalone Kubernetes YAML and talks
// to services from the client namespace.
package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Environment variables naming prebuilt binaries, so `make e2e` can test
// exactly what it built instead of building again.
const (
	NodegressBinEnv  = "NODEGRESS_BIN"
	PodserverBinEnv  = "PODSERVER_BIN"
	KubectlPluginEnv = "KUBECTL_NODEGRESS_BIN"
)

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]buildResult{}
)

type buildResult struct {
	path string
	err  error
}

// Nodegress returns the path of the nodegress binary, building ./cmd/nodegress
// on first use unless NODEGRESS_BIN names one.
func Nodegress(t testing.TB) string {
	t.Helper()
	return binary(t, NodegressBinEnv, "./cmd/nodegress", "nodegress")
}

// Podserver returns the path of the podserver binary, building
// ./tests/cmd/podserver on first use unless PODSERVER_BIN names one.
func Podserver(t testing.TB) string {
	t.Helper()
	return binary(t, PodserverBinEnv, "./tests/cmd/podserver", "podserver")
}

// KubectlPlugin returns the path of the kubectl-nodegress plugin, building
// ./cmd/kubectl-nodegress on first use unless KUBECTL_NODEGRESS_BIN names
// one.
func KubectlPlugin(t testing.TB) string {
	t.Helper()
	return binary(t, KubectlPluginEnv, "./cmd/kubectl-nodegress", "kubectl-nodegress")
}

// Main runs the tests and removes the binaries built for them. Call it from
// TestMain: os.Exit(harness.Main(m)) would skip deferred calls, so it exits
// itself.
func Main(m *testing.M) {
	code := m.Run()
	buildMu.Lock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	buildMu.Unlock()
	os.Exit(code)
}

func binary(t testing.TB, env, pkg, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return abs
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	r, ok := built[pkg]
	if !ok {
		r.path, r.err = goBuild(pkg, name)
		built[pkg] = r
	}
	if r.err != nil {
		t.Fatalf("build %s: %v", pkg, r.err)
	}
	return r.path
}

// goBuild builds pkg (relative to the module root) into the shared build
// directory. Called with buildMu held.
func goBuild(pkg, name string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "nodegress-e2e-bin-")
		if err != nil {
			return "", fmt.Errorf("create build dir: %w", err)
		}
		buildDir = d
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go toolchain not in PATH: %w", err)
	}
	out := filepath.Join(buildDir, name)
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, bytes.TrimSpace(msg))
	}
	return out, nil
}

// ModuleRoot returns the directory of the nodegress go.mod, searched upwards
// from the working directory (a test's package directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/nodegress/nodegress\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("nodegress module root not found above the working directory")
		}
		dir = parent
	}
}

// NodegressAt returns a nodegress binary built from commit (of this
// repository's history), for upgrade tests: the agent of an older release.
// Builds are cached by commit under /var/cache/nodegress/builds.
func NodegressAt(t testing.TB, commit string) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join("/var/cache/nodegress/builds", commit, "nodegress")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	src, err := os.MkdirTemp("", "nodegress-"+commit+"-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = exec.Command("git", "-C", root, "worktree", "remove", "--force", src).Run()
		_ = os.RemoveAll(src)
	}()
	run := func(dir string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, msg)
		}
	}
	run(root, "git", "worktree", "add", "--detach", src, commit)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	run(src, "go", "build", "-o", out+".tmp", "./cmd/nodegress")
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	return out
}
