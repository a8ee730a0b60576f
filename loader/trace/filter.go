package trace

import (
	"flag"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodegress/nodegress/loader"
)

// Filter selects the events a client receives. Empty fields match
// everything; the fields that are set must all match. Verdict and Reason take
// comma-separated lists and match any entry.
//
// Filter is also the client's handshake: its JSON form is sent to the agent,
// which evaluates it. Count and Duration only limit the client and are never
// sent.
type Filter struct {
	// Service matches events whose service name contains it. Substring
	// matching serves ad-hoc debugging best: "default/web" selects every
	// port of that service, "default/web:http/TCP" exactly one, "web" also
	// catches "default/web-admin".
	Service string `json:"service,omitempty"`
	// Device is an interface name, matched exactly.
	Device string `json:"device,omitempty"`
	// Addr is an IP address or CIDR prefix. It matches the source or
	// destination of the original or the translated tuple, so a backend's
	// address finds the flows forwarded to it.
	Addr string `json:"addr,omitempty"`
	// Port matches the source or destination port of either tuple.
	Port uint16 `json:"port,omitempty"`
	// Proto is "tcp", "udp" or a protocol number.
	Proto string `json:"proto,omitempty"`
	// Verdict lists verdicts: pass, tx, redirect, drop.
	Verdict string `json:"verdict,omitempty"`
	// Reason lists reason names as the datapath counts them, for example
	// "drop_no_backend,drop_snat_exhausted", and, with KernelDrops, the
	// kernel's drop reason names ("NO_SOCKET", "IP_NOROUTE").
	Reason string `json:"reason,omitempty"`
	// KernelDrops adds the kernel's drops of packets of flows the datapath
	// translated or steered (stage "kernel") to the stream. The agent
	// attaches the kfree_skb tracepoint only while a client asks for it.
	KernelDrops bool `json:"kernel_drops,omitempty"`
	// RequestFilter turns the stream into one of request records.
	RequestFilter
	// Snaplen asks for up to that many bytes of each packet (Record.Packet),
	// for a pcap; the datapath copies at most loader.MaxSnaplen.
	Snaplen int `json:"snaplen,omitempty"`

	// Count stops the client after that many events; 0 means no limit.
	Count int `json:"-"`
	// Duration stops the client after that long; 0 means until interrupted.
	Duration time.Duration `json:"-"`
}

// RegisterFlags registers the filter and limit flags of `nodegress trace`.
func (f *Filter) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.Service, "service", f.Service, "only events of services whose name contains `NAME`, e.g. default/web")
	fs.StringVar(&f.Device, "device", f.Device, "only events seen on interface `DEV`")
	fs.StringVar(&f.Addr, "addr", f.Addr, "only events with source or destination (original or translated) in `IP|CIDR`")
	fs.Var((*portValue)(&f.Port), "port", "only events with source or destination `PORT` (original or translated)")
	fs.StringVar(&f.Proto, "proto", f.Proto, "only events of protocol `PROTO`: tcp, udp or a number")
	fs.StringVar(&f.Verdict, "verdict", f.Verdict, "only events with one of these comma-separated `VERDICTS`: "+strings.Join(verdictNames(), ", "))
	fs.StringVar(&f.Reason, "reason", f.Reason, "only events with one of these comma-separated `REASONS`, e.g. drop_no_backend (with --kernel-drops also kernel reasons, e.g. NO_SOCKET)")
	fs.BoolVar(&f.KernelDrops, "kernel-drops", f.KernelDrops, "also show packets of service flows the kernel dropped, with the kernel's drop reason and location")
	f.RequestFilter.registerFlags(fs)
	fs.IntVar(&f.Count, "count", f.Count, "stop after `N` events (0: no limit)")
	fs.DurationVar(&f.Duration, "duration", f.Duration, "stop after this long (0: until interrupted)")
}

type portValue uint16

func (p *portValue) String() string {
	if p == nil || *p == 0 {
		return ""
	}
	return strconv.Itoa(int(*p))
}

func (p *portValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q: want a number from 0 to 65535", s)
	}
	*p = portValue(n)
	return nil
}

// Validate reports the first field that does not parse.
func (f Filter) Validate() error {
	_, err := f.compile()
	if err == nil && f.Count < 0 {
		err = fmt.Errorf("count %d: must not be negative", f.Count)
	}
	if err == nil && f.Duration < 0 {
		err = fmt.Errorf("duration %s: must not be negative", f.Duration)
	}
	return err
}

var allVerdicts = []loader.Verdict{loader.VerdictPass, loader.VerdictTX, loader.VerdictRedirect, loader.VerdictDrop}

func verdictNames() []string {
	names := make([]string, len(allVerdicts))
	for i, v := range allVerdicts {
		names[i] = strings.ToLower(v.String())
	}
	return names
}

// matcher is a Filter parsed once per client, so the per-event work is
// comparisons only.
type matcher struct {
	service  string
	device   string
	prefix   netip.Prefix // invalid: any address
	port     uint16
	proto    loader.Proto // 0: any
	verdicts []loader.Verdict
	reasons  []loader.Reason
	// kernelDrops lets kernel drop events through; kernelReasons are
	// kernel reason names (upper case) the Reason list asked for.
	kernelDrops   bool
	kernelReasons []string
	// req matches request records; a client with one gets no events.
	req *requestMatcher
}

func (f Filter) compile() (*matcher, error) {
	m := &matcher{service: f.Service, device: f.Device, port: f.Port, kernelDrops: f.KernelDrops}
	var err error
	if m.req, err = f.RequestFilter.compile(); err != nil {
		return nil, err
	}
	if f.Snaplen < 0 {
		return nil, fmt.Errorf("snap length %d: must not be negative", f.Snaplen)
	}
	if f.Addr != "" {
		p, err := parseAddrOrPrefix(f.Addr)
		if err != nil {
			return nil, err
		}
		m.prefix = p
	}
	if f.Proto != "" {
		p, err := parseProto(f.Proto)
		if err != nil {
			return nil, err
		}
		m.proto = p
	}
	for _, s := range splitList(f.Verdict) {
		v, ok := parseVerdict(s)
		if !ok {
			return nil, fmt.Errorf("unknown verdict %q (want %s)", s, strings.Join(verdictNames(), ", "))
		}
		m.verdicts = append(m.verdicts, v)
	}
	for _, s := range splitList(f.Reason) {
		r, ok := parseReason(s)
		if !ok {
			// The kernel's names are read from its BTF by the agent
			// and differ between kernels: any name is accepted.
			if f.KernelDrops && kernelReasonName.MatchString(s) {
				m.kernelReasons = append(m.kernelReasons, strings.ToUpper(s))
				continue
			}
			hint := ""
			if !f.KernelDrops {
				hint = "; kernel drop reasons need --kernel-drops"
			}
			return nil, fmt.Errorf("unknown reason %q (want one of %s%s)", s, strings.Join(reasonNames(), ", "), hint)
		}
		m.reasons = append(m.reasons, r)
	}
	return m, nil
}

// kernelReasonName is the shape of an enum skb_drop_reason name, without
// its SKB_DROP_REASON_ prefix.
var kernelReasonName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*$`)

func parseAddrOrPrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("address filter: %w", err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address filter: %w", err)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseProto(s string) (loader.Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return loader.TCP, nil
	case "udp":
		return loader.UDP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("unknown protocol %q (want tcp, udp or a number from 1 to 255)", s)
	}
	return loader.Proto(n), nil
}

func parseVerdict(s string) (loader.Verdict, bool) {
	for _, v := range allVerdicts {
		if strings.EqualFold(s, v.String()) {
			return v, true
		}
	}
	return 0, false
}

func parseReason(s string) (loader.Reason, bool) {
	s = strings.ToLower(s)
	for _, r := range loader.Reasons() {
		if s == r.String() {
			return r, true
		}
	}
	// The wire name of codes the agent has no name for, see reasonName.
	if n, ok := strings.CutPrefix(s, "reason_"); ok {
		if v, err := strconv.ParseUint(n, 10, 16); err == nil {
			return loader.Reason(v), true
		}
	}
	return 0, false
}

func reasonNames() []string {
	var names []string
	for _, r := range loader.Reasons() {
		names = append(names, r.String())
	}
	return names
}

func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// match tells whether ev, seen on device and belonging to service, passes.
func (m *matcher) match(ev *loader.Event, device, service string) bool {
	if m.req != nil {
		return false
	}
	if m.device != "" && device != m.device {
		return false
	}
	if m.service != "" && !strings.Contains(service, m.service) {
		return false
	}
	if m.proto != 0 && ev.Orig.Proto != m.proto {
		return false
	}
	if m.prefix.IsValid() && !anyAddr(ev, m.prefix.Contains) {
		return false
	}
	if m.port != 0 && !anyPort(ev, m.port) {
		return false
	}
	if len(m.verdicts) > 0 && !slices.Contains(m.verdicts, ev.Verdict) {
		return false
	}
	if kd := ev.KernelDrop; kd != nil {
		if !m.kernelDrops {
			return false
		}
		if len(m.reasons)+len(m.kernelReasons) > 0 && !slices.Contains(m.kernelReasons, strings.ToUpper(kd.ReasonName)) {
			return false
		}
		return true
	}
	if len(m.reasons)+len(m.kernelReasons) > 0 && !slices.Contains(m.reasons, ev.Reason) {
		return false
	}
	return true
}

func anyAddr(ev *loader.Event, ok func(netip.Addr) bool) bool {
	for _, ap := range [...]netip.AddrPort{ev.Orig.Src, ev.Orig.Dst, ev.Xlated.Src, ev.Xlated.Dst} {
		if a := ap.Addr().Unmap(); a.IsValid() && ok(a) {
			return true
		}
	}
	return false
}

func anyPort(ev *loader.Event, port uint16) bool {
	return ev.Orig.Src.Port() == port || ev.Orig.Dst.Port() == port ||
		ev.Xlated.Src.Port() == port || ev.Xlated.Dst.Port() == port
}
