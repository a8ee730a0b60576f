package l7proxy

import (
	"strings"
	"testing"
)

// engines are the HTTP/1.1 engines every proxy test runs against.
var engines = []string{EngineFast, EngineStdlib}

// forEachEngine runs f as one subtest per engine. startProxy reads the
// engine from the subtest's name, so a test cannot forget to pass it on.
func forEachEngine(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, e := range engines {
		t.Run(e, f)
	}
}

// engineOf returns the engine a test runs with: the element of its name
// that forEachEngine added.
func engineOf(t testing.TB) string {
	t.Helper()
	for _, part := range strings.Split(t.Name(), "/") {
		for _, e := range engines {
			if part == e {
				return e
			}
		}
	}
	t.Fatalf("%s does not run under forEachEngine", t.Name())
	return ""
}
