package trace

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nodegress/nodegress/loader"
)

// RequestFilter selects request records instead of datapath events. With
// Requests set, the other filters of Filter apply to each record: Addr
// and Port to either end of either connection, Service to the upstream,
// Device, Verdict and Reason to the connections' events.
type RequestFilter struct {
	// Requests streams one record per HTTP request through the proxy.
	Requests bool `json:"requests,omitempty"`
	// Host matches the request's host, without a port, case-insensitively.
	Host string `json:"host,omitempty"`
	// Path matches requests whose path starts with it.
	Path string `json:"path,omitempty"`
	// Status lists codes ("404") and classes ("5xx"), comma-separated.
	Status string `json:"status,omitempty"`
	// RequestID matches one request ID exactly.
	RequestID string `json:"request_id,omitempty"`
}

func (f *RequestFilter) registerFlags(fs *flag.FlagSet) {
	fs.BoolVar(&f.Requests, "requests", f.Requests, "show one record per HTTP request through the proxy, joined with its connections' datapath (and with --kernel-drops kernel) events")
	fs.StringVar(&f.Host, "host", f.Host, "with --requests: only requests for `HOST`")
	fs.StringVar(&f.Path, "path", f.Path, "with --requests: only requests whose path starts with `PREFIX`")
	fs.StringVar(&f.Status, "status", f.Status, "with --requests: only requests with one of these comma-separated `CODES` or classes, e.g. 404,5xx")
	fs.StringVar(&f.RequestID, "request-id", f.RequestID, "with --requests: only the request with this `ID`")
}

// requestMatcher is a RequestFilter parsed once per client.
type requestMatcher struct {
	host, path, id string
	// status holds exact codes, classes their hundreds digit (5 for
	// 5xx).
	codes   []int
	classes []int
}

// compile returns nil when the client asked for no request records.
func (f RequestFilter) compile() (*requestMatcher, error) {
	if !f.Requests {
		if f.Host != "" || f.Path != "" || f.Status != "" || f.RequestID != "" {
			return nil, errors.New("host, path, status and request-id filters need --requests")
		}
		return nil, nil
	}
	m := &requestMatcher{host: strings.ToLower(f.Host), path: f.Path, id: f.RequestID}
	for _, s := range splitList(f.Status) {
		if len(s) == 3 && s[0] >= '1' && s[0] <= '5' && strings.EqualFold(s[1:], "xx") {
			m.classes = append(m.classes, int(s[0]-'0'))
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 100 || n > 999 {
			return nil, fmt.Errorf("status %q: want a code (404) or a class (1xx to 5xx)", s)
		}
		m.codes = append(m.codes, n)
	}
	return m, nil
}

// matchRequest tells whether a joined request record passes the filter.
func (m *matcher) matchRequest(r *Request) bool {
	q := m.req
	if q.id != "" && r.ID != q.id {
		return false
	}
	if q.host != "" && !strings.EqualFold(stripPort(r.Host), q.host) {
		return false
	}
	if q.path != "" && !strings.HasPrefix(r.Path, q.path) {
		return false
	}
	if len(q.codes)+len(q.classes) > 0 && !slices.Contains(q.codes, r.Status) && !slices.Contains(q.classes, r.Status/100) {
		return false
	}
	if m.service != "" && !strings.Contains(r.Upstream.Service, m.service) {
		return false
	}
	if m.proto != 0 && m.proto != loader.TCP {
		return false
	}
	ends := [...]netip.AddrPort{r.Client.Tuple.Src, r.Client.Tuple.Dst, r.Upstream.Tuple.Src, r.Upstream.Tuple.Dst}
	if m.prefix.IsValid() && !slices.ContainsFunc(ends[:], func(ap netip.AddrPort) bool {
		a := ap.Addr().Unmap()
		return a.IsValid() && m.prefix.Contains(a)
	}) {
		return false
	}
	if m.port != 0 && !slices.ContainsFunc(ends[:], func(ap netip.AddrPort) bool { return ap.Port() == m.port }) {
		return false
	}
	if m.device == "" && len(m.verdicts) == 0 && len(m.reasons)+len(m.kernelReasons) == 0 {
		return true
	}
	// The event filters ask for a request with at least one such event.
	for _, evs := range [...][]Record{r.Client.Steering, r.Client.Drops, r.Upstream.Drops} {
		if slices.ContainsFunc(evs, m.matchRecord) {
			return true
		}
	}
	return false
}

// matchRecord applies the device, verdict and reason filters to a joined
// event.
func (m *matcher) matchRecord(e Record) bool {
	if m.device != "" && e.Device != m.device {
		return false
	}
	if len(m.verdicts) > 0 && !slices.ContainsFunc(m.verdicts, func(v loader.Verdict) bool {
		return strings.EqualFold(v.String(), e.Verdict)
	}) {
		return false
	}
	if len(m.reasons)+len(m.kernelReasons) == 0 {
		return true
	}
	if e.Stage == "kernel" {
		return slices.Contains(m.kernelReasons, strings.ToUpper(e.Reason))
	}
	return slices.ContainsFunc(m.reasons, func(r loader.Reason) bool { return reasonName(r) == e.Reason })
}

// stripPort drops a Host header's port.
func stripPort(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		return host[:i]
	}
	return host
}
