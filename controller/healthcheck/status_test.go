package healthcheck

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestStatusHandler: kube-proxy's status server answers /proxyMode with
// the proxy's name, /healthz and /livez as the node health server, and
// /metrics when given; nothing else.
func TestStatusHandler(t *testing.T) {
	p := NewProxy(DefaultTimeout)
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "m 1\n") })
	h := p.StatusHandler("nodegress", metrics)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/proxyMode", 200, "nodegress"},
		{"/metrics", 200, "m 1\n"},
		{"/livez", 200, ""},
		{"/configz", 404, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
		if rec.Code != tc.status || (tc.body != "" && rec.Body.String() != tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.path, rec.Code, rec.Body.String(), tc.status, tc.body)
		}
	}
}
