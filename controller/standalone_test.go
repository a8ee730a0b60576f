package controller

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodegress/nodegress/loader"
)

// waitLimit bounds every wait in these tests.
const waitLimit = 5 * time.Second

// fakeDatapath records what the controller applies.
type fakeDatapath struct {
	mu       sync.Mutex
	calls    [][]loader.Service
	failures int // the next failures calls fail
}

func (f *fakeDatapath) Apply(services []loader.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failures > 0 {
		f.failures--
		return errors.New("map update refused")
	}
	f.calls = append(f.calls, slices.Clone(services))
	return nil
}

func (f *fakeDatapath) snapshot() [][]loader.Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeDatapath) last() []loader.Service {
	calls := f.snapshot()
	if len(calls) == 0 {
		return nil
	}
	return calls[len(calls)-1]
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the log lines containing all of words.
func (b *logBuffer) lines(words ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok && l != "" {
			out = append(out, l)
		}
	}
	return out
}

func testLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	b := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", limit, what)
	return 0
}

// writeAtomic replaces a file the way editors and ConfigMap updates do.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func findService(services []loader.Service, name string) (loader.Service, bool) {
	for _, s := range services {
		if s.Name == name {
			return s, true
		}
	}
	return loader.Service{}, false
}

func backendAddrs(s loader.Service) []string {
	var out []string
	for _, b := range s.Backends {
		out = append(out, b.String())
	}
	return out
}

// startController runs a standalone controller and stops it at the end of
// the test, failing it if Run does not return.
func startController(t *testing.T, dir string, log *slog.Logger) (*Controller, *fakeDatapath) {
	t.Helper()
	dp := &fakeDatapath{}
	c, err := New(Config{
		NodeName:      "node-a",
		NodeIPs:       []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		StandaloneDir: dir,
		Logger:        log,
	}, dp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of cancel", waitLimit)
		}
	})
	return c, dp
}

const secondEndpoint = `- addresses: ["10.0.1.1"]
  nodeName: node-b
`

const otherService = `apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: shop
spec:
  externalIPs: [198.51.100.1]
  ports:
  - port: 443
    targetPort: 8443
`

func TestStandaloneWatch(t *testing.T) {
	dir := t.TempDir()
	svcFile := filepath.Join(dir, "web.yaml")
	sliceFile := filepath.Join(dir, "web-endpoints.yml")
	otherFile := filepath.Join(dir, "other.yaml")
	writeFile(t, svcFile, webService)
	writeFile(t, sliceFile, webSlice)
	writeFile(t, filepath.Join(dir, "notes.txt"), "not a manifest")

	log, logs := testLogger(t)
	c, dp := startController(t, dir, log)

	select {
	case <-c.Synced():
	case <-time.After(waitLimit):
		t.Fatal("no initial sync")
	}
	want := loader.Service{
		Name: "default/web:http/TCP", Proto: loader.TCP,
		Frontends: []loader.Frontend{{Addr: netip.MustParseAddr("192.0.2.10"), Port: 30080}},
		Backends:  []loader.Backend{{Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Local: true}},
	}
	if got := dp.snapshot(); len(got) != 1 || !servicesEqual(got[0], []loader.Service{want}) {
		t.Fatalf("initial state: got %+v, want one Apply of %+v", got, want)
	}

	hasBackends := func(addrs ...string) func() bool {
		return func() bool {
			s, ok := findService(dp.last(), "default/web:http/TCP")
			return ok && slices.Equal(backendAddrs(s), addrs)
		}
	}

	// An atomic replace (rename) and an in-place write are both picked up
	// within a second.
	writeAtomic(t, sliceFile, webSlice+secondEndpoint)
	took := waitFor(t, "second backend", waitLimit, hasBackends("10.0.0.1:8080", "10.0.1.1:8080"))
	if took > time.Second {
		t.Errorf("change applied after %v, want < 1s", took)
	}
	writeFile(t, sliceFile, strings.Replace(webSlice, "10.0.0.1", "10.0.0.2", 1))
	took = waitFor(t, "replaced backend", waitLimit, hasBackends("10.0.0.2:8080"))
	if took > time.Second {
		t.Errorf("in-place change applied after %v, want < 1s", took)
	}

	// A new file adds its service without touching the others.
	callsBefore := len(dp.snapshot())
	writeAtomic(t, otherFile, otherService)
	waitFor(t, "service from a new file", waitLimit, func() bool {
		_, ok := findService(dp.last(), "shop/api:443/TCP")
		return ok
	})
	if calls := dp.snapshot(); len(calls)-callsBefore != 1 {
		t.Errorf("adding one file made %d Apply calls, want 1", len(calls)-callsBefore)
	}
	if !hasBackends("10.0.0.2:8080")() {
		t.Errorf("web changed when another file was added: %+v", dp.last())
	}

	// A broken file keeps its objects and is named in the log.
	stable := dp.last()
	writeAtomic(t, svcFile, webService+"   broken: [\n")
	waitFor(t, "log naming the broken file", waitLimit, func() bool {
		return len(logs.lines("invalid document", "file="+svcFile, "doc=1", "line=1", "yaml: line 1")) > 0
	})
	// An invalid object keeps its last good version; the log names it.
	writeAtomic(t, otherFile, strings.Replace(otherService, "port: 443", "port: 0", 1))
	waitFor(t, "log naming the invalid object", waitLimit, func() bool {
		return len(logs.lines("keeping its previous version", "file="+otherFile, `object="Service shop/api"`)) > 0
	})
	// Give a wrong sync the time to happen before checking there was none.
	time.Sleep(300 * time.Millisecond)
	if got := dp.last(); !servicesEqual(got, stable) {
		t.Errorf("state changed after broken input:\n got %+v\nwant %+v", got, stable)
	}

	// Fixing the file applies it; removing a file removes its service.
	writeAtomic(t, svcFile, strings.Replace(webService, "30080", "30081", 1))
	waitFor(t, "fixed file applied", waitLimit, func() bool {
		s, ok := findService(dp.last(), "default/web:http/TCP")
		return ok && s.Frontends[0].Port == 30081
	})
	if err := os.Remove(otherFile); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "service of a removed file gone", waitLimit, func() bool {
		_, ok := findService(dp.last(), "shop/api:443/TCP")
		return !ok && len(dp.last()) == 1
	})
}

func TestStandaloneDirectoryCreatedLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "manifests")
	log, logs := testLogger(t)
	c, dp := startController(t, dir, log)

	select {
	case <-c.Synced():
	case <-time.After(waitLimit):
		t.Fatal("no initial sync without a directory")
	}
	if got := dp.snapshot(); len(got) != 1 || len(got[0]) != 0 {
		t.Fatalf("want one empty Apply, got %+v", got)
	}
	if len(logs.lines("read standalone directory", "dir="+dir)) != 1 {
		t.Errorf("missing directory not logged exactly once")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "web.yaml"), webService+"---\n"+webSlice)
	waitFor(t, "service from the new directory", waitLimit, func() bool {
		_, ok := findService(dp.last(), "default/web:http/TCP")
		return ok
	})
}

func TestStandaloneApplyRetried(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "web.yaml"), webService+"---\n"+webSlice)
	log, logs := testLogger(t)
	dp := &fakeDatapath{failures: 2}
	c, err := New(Config{NodeName: "node-a", NodeIPs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, StandaloneDir: dir, Logger: log}, dp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Synced():
	case <-ctx.Done():
		t.Fatal("not synced after Apply failures")
	}
	if n := len(logs.lines("datapath sync", "map update refused")); n != 2 {
		t.Errorf("%d failed syncs logged, want 2", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestStandaloneSource checks the file-to-object rules on the source alone.
func TestStandaloneSource(t *testing.T) {
	dir := t.TempDir()
	log, logs := testLogger(t)
	s := newStandaloneSource(dir, log)
	ctx := context.Background()
	services := func() []string {
		list, err := s.client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, svc := range list.Items {
			out = append(out, svc.Namespace+"/"+svc.Name+":"+svc.Spec.Ports[0].TargetPort.String())
		}
		slices.Sort(out)
		return out
	}
	svc := func(name, target string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name + "}\nspec: {ports: [{port: 80, targetPort: " + target + "}]}\n"
	}
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")

	steps := []struct {
		name  string
		write map[string]string // path -> content; "" removes
		want  []string
		log   []string // words of one expected log line
	}{
		{
			name:  "initial load, hidden files ignored",
			write: map[string]string{a: svc("one", "81") + "---\n" + svc("two", "82"), filepath.Join(dir, ".#a.yaml"): svc("hidden", "1")},
			want:  []string{"default/one:81", "default/two:82"},
		},
		{
			name:  "invalid object keeps its previous version, valid neighbour updates",
			write: map[string]string{a: svc("one", "81") + "extra: 1\n---\n" + svc("two", "92")},
			want:  []string{"default/one:81", "default/two:92"},
			log:   []string{"keeping its previous version", "file=" + a, "doc=1", `object="Service default/one"`},
		},
		{
			name:  "unreadable document keeps objects the file no longer defines",
			write: map[string]string{a: "kind: [\n---\n" + svc("two", "93")},
			want:  []string{"default/one:81", "default/two:93"},
			log:   []string{"invalid document", "file=" + a, "doc=1", "line=1"},
		},
		{
			name:  "fixed file drops what it no longer defines",
			write: map[string]string{a: svc("two", "94")},
			want:  []string{"default/two:94"},
		},
		{
			name:  "duplicate in a second file: the first definition wins",
			write: map[string]string{b: svc("two", "99") + "---\n" + svc("three", "83")},
			want:  []string{"default/three:83", "default/two:94"},
			log:   []string{"object defined in two files", "file=" + b, `object="Service default/two"`, "defined_in=" + a},
		},
		{
			name:  "the other copy takes over when the first goes",
			write: map[string]string{a: ""},
			want:  []string{"default/three:83", "default/two:99"},
		},
	}
	for _, st := range steps {
		for path, content := range st.write {
			if content == "" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				continue
			}
			writeFile(t, path, content)
		}
		s.Rescan()
		if got := services(); !slices.Equal(got, st.want) {
			t.Errorf("%s: services %q, want %q", st.name, got, st.want)
		}
		if st.log != nil && len(logs.lines(st.log...)) == 0 {
			t.Errorf("%s: no log line with %q", st.name, st.log)
		}
	}
}

func TestStandaloneContestedFrontendStaysWithOlderService(t *testing.T) {
	dir := t.TempDir()
	svc := func(name string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name + "}\nspec: {externalIPs: [198.51.100.1], ports: [{port: 80}]}\n"
	}
	writeFile(t, filepath.Join(dir, "z.yaml"), svc("zz"))
	log, logs := testLogger(t)
	c, dp := startController(t, dir, log)
	select {
	case <-c.Synced():
	case <-time.After(waitLimit):
		t.Fatal("no initial sync")
	}
	// "aa" sorts first but comes later: the served frontend must not move.
	writeFile(t, filepath.Join(dir, "a.yaml"), svc("aa"))
	waitFor(t, "conflict logged", waitLimit, func() bool {
		return len(logs.lines("invalid object", `object=default/aa`, "already used by default/zz:80/TCP")) > 0
	})
	got := dp.last()
	if len(got) != 1 || got[0].Name != "default/zz:80/TCP" {
		t.Errorf("frontend moved: %+v", got)
	}
}
