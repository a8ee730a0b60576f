package loader

// Reason says why a packet got its verdict; it indexes the datapath's
// per-CPU counters. The values follow enum reason in bpf/lib/consts.h.
type Reason uint16

// Reasons, in the order of enum reason.
const (
	ReasonUnspec Reason = iota
	ReasonPassNotIPv4
	ReasonPassNotTCPUDP
	ReasonPassNoFrontend
	ReasonPassFragment
	ReasonPassL7
	ReasonPassFIB
	ReasonFwdLocal
	ReasonFwdRemote
	ReasonReplyLocal
	ReasonReplyRemote
	ReasonDropMalformedL2
	ReasonDropMalformedIP
	ReasonDropMalformedL4
	ReasonDropNoBackend
	ReasonDropSNATExhausted
	ReasonDropNoSNATAddr
	ReasonDropTTLExceeded
	ReasonDropMapFull
	ReasonPassNotTracked
	ReasonPassCsumPartial
	reasonMax
)

var reasonNames = [...]string{
	ReasonUnspec:            "unspec",
	ReasonPassNotIPv4:       "pass_not_ipv4",
	ReasonPassNotTCPUDP:     "pass_not_tcp_udp",
	ReasonPassNoFrontend:    "pass_no_frontend",
	ReasonPassFragment:      "pass_fragment",
	ReasonPassL7:            "pass_l7",
	ReasonPassFIB:           "pass_fib",
	ReasonFwdLocal:          "fwd_local",
	ReasonFwdRemote:         "fwd_remote",
	ReasonReplyLocal:        "reply_local",
	ReasonReplyRemote:       "reply_remote",
	ReasonDropMalformedL2:   "drop_malformed_l2",
	ReasonDropMalformedIP:   "drop_malformed_ip",
	ReasonDropMalformedL4:   "drop_malformed_l4",
	ReasonDropNoBackend:     "drop_no_backend",
	ReasonDropSNATExhausted: "drop_snat_exhausted",
	ReasonDropNoSNATAddr:    "drop_no_snat_addr",
	ReasonDropTTLExceeded:   "drop_ttl_exceeded",
	ReasonDropMapFull:       "drop_map_full",
	ReasonPassNotTracked:    "pass_not_tracked",
	ReasonPassCsumPartial:   "pass_csum_partial",
}

// Reasons lists every reason the datapath counts, in index order.
func Reasons() []Reason {
	rs := make([]Reason, 0, reasonMax)
	for r := Reason(0); r < reasonMax; r++ {
		rs = append(rs, r)
	}
	return rs
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// IsDrop tells whether packets counted under r were dropped.
func (r Reason) IsDrop() bool {
	return r >= ReasonDropMalformedL2 && r <= ReasonDropMapFull
}
