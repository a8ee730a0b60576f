package loader

// Reason says why a packet got its verdict; it indexes the datapath's
// per-CPU counters. The values are enum reason of bpf/lib/consts.h, as
// bpf2go generates them; TestABI checks names and verdicts against the
// object's BTF.
type Reason uint16

// Reasons, in the order of enum reason.
const (
	ReasonUnspec             = Reason(datapathReasonREASON_UNSPEC)
	ReasonPassNotIPv4        = Reason(datapathReasonREASON_PASS_NOT_IPV4)
	ReasonPassNotTCPUDP      = Reason(datapathReasonREASON_PASS_NOT_TCP_UDP)
	ReasonPassNoFrontend     = Reason(datapathReasonREASON_PASS_NO_FRONTEND)
	ReasonPassFragment       = Reason(datapathReasonREASON_PASS_FRAGMENT)
	ReasonPassL7             = Reason(datapathReasonREASON_PASS_L7)
	ReasonPassFIB            = Reason(datapathReasonREASON_PASS_FIB)
	ReasonFwdLocal           = Reason(datapathReasonREASON_FWD_LOCAL)
	ReasonFwdRemote          = Reason(datapathReasonREASON_FWD_REMOTE)
	ReasonReplyLocal         = Reason(datapathReasonREASON_REPLY_LOCAL)
	ReasonReplyRemote        = Reason(datapathReasonREASON_REPLY_REMOTE)
	ReasonDropMalformedL2    = Reason(datapathReasonREASON_DROP_MALFORMED_L2)
	ReasonDropMalformedIP    = Reason(datapathReasonREASON_DROP_MALFORMED_IP)
	ReasonDropMalformedL4    = Reason(datapathReasonREASON_DROP_MALFORMED_L4)
	ReasonDropNoBackend      = Reason(datapathReasonREASON_DROP_NO_BACKEND)
	ReasonDropSNATExhausted  = Reason(datapathReasonREASON_DROP_SNAT_EXHAUSTED)
	ReasonDropNoSNATAddr     = Reason(datapathReasonREASON_DROP_NO_SNAT_ADDR)
	ReasonDropTTLExceeded    = Reason(datapathReasonREASON_DROP_TTL_EXCEEDED)
	ReasonDropMapFull        = Reason(datapathReasonREASON_DROP_MAP_FULL)
	ReasonPassNotTracked     = Reason(datapathReasonREASON_PASS_NOT_TRACKED)
	ReasonPassCsumPartial    = Reason(datapathReasonREASON_PASS_CSUM_PARTIAL)
	ReasonDropSourceRange    = Reason(datapathReasonREASON_DROP_SOURCE_RANGE)
	ReasonRejectNoBackend    = Reason(datapathReasonREASON_REJECT_NO_BACKEND)
	ReasonPassReject         = Reason(datapathReasonREASON_PASS_REJECT)
	ReasonSockFwd            = Reason(datapathReasonREASON_SOCK_FWD)
	ReasonSockReject         = Reason(datapathReasonREASON_SOCK_REJECT)
	ReasonICMPFwd            = Reason(datapathReasonREASON_ICMP_FWD)
	ReasonICMPXlate          = Reason(datapathReasonREASON_ICMP_XLATE)
	ReasonICMPFragNeeded     = Reason(datapathReasonREASON_ICMP_FRAG_NEEDED)
	ReasonDropFragNeeded     = Reason(datapathReasonREASON_DROP_FRAG_NEEDED)
	ReasonPassICMPError      = Reason(datapathReasonREASON_PASS_ICMP_ERROR)
	ReasonFwdDSR             = Reason(datapathReasonREASON_FWD_DSR)
	ReasonDSRDecap           = Reason(datapathReasonREASON_DSR_DECAP)
	ReasonReplyDSR           = Reason(datapathReasonREASON_REPLY_DSR)
	ReasonPassDSR            = Reason(datapathReasonREASON_PASS_DSR)
	ReasonDropDSRMalformed   = Reason(datapathReasonREASON_DROP_DSR_MALFORMED)
	ReasonDropDSRNoNode      = Reason(datapathReasonREASON_DROP_DSR_NO_NODE)
	ReasonFwdLocalPeer       = Reason(datapathReasonREASON_FWD_LOCAL_PEER)
	ReasonDSRDecapPeer       = Reason(datapathReasonREASON_DSR_DECAP_PEER)
	ReasonSkSteer            = Reason(datapathReasonREASON_SK_STEER)
	ReasonPassNoProxySocket  = Reason(datapathReasonREASON_PASS_NO_PROXY_SOCKET)
	ReasonPassSkAssignFailed = Reason(datapathReasonREASON_PASS_SK_ASSIGN_FAILED)
	ReasonDropStateMigrating = Reason(datapathReasonREASON_DROP_STATE_MIGRATING)
	reasonMax                = Reason(datapathReasonREASON_MAX)
)

// reasonInfo is what the Go side knows of a reason: its name in traces and
// metrics, and the verdict of every packet counted under it (as
// REASON_TABLE in bpf/lib/consts.h says; forwards say VerdictRedirect).
type reasonInfo struct {
	name    string
	verdict Verdict
}

var reasonTable = [...]reasonInfo{
	ReasonUnspec:             {"unspec", VerdictPass},
	ReasonPassNotIPv4:        {"pass_not_ipv4", VerdictPass},
	ReasonPassNotTCPUDP:      {"pass_not_tcp_udp", VerdictPass},
	ReasonPassNoFrontend:     {"pass_no_frontend", VerdictPass},
	ReasonPassFragment:       {"pass_fragment", VerdictPass},
	ReasonPassL7:             {"pass_l7", VerdictPass},
	ReasonPassFIB:            {"pass_fib", VerdictPass},
	ReasonFwdLocal:           {"fwd_local", VerdictPass},
	ReasonFwdRemote:          {"fwd_remote", VerdictRedirect},
	ReasonReplyLocal:         {"reply_local", VerdictPass},
	ReasonReplyRemote:        {"reply_remote", VerdictRedirect},
	ReasonDropMalformedL2:    {"drop_malformed_l2", VerdictDrop},
	ReasonDropMalformedIP:    {"drop_malformed_ip", VerdictDrop},
	ReasonDropMalformedL4:    {"drop_malformed_l4", VerdictDrop},
	ReasonDropNoBackend:      {"drop_no_backend", VerdictDrop},
	ReasonDropSNATExhausted:  {"drop_snat_exhausted", VerdictDrop},
	ReasonDropNoSNATAddr:     {"drop_no_snat_addr", VerdictDrop},
	ReasonDropTTLExceeded:    {"drop_ttl_exceeded", VerdictDrop},
	ReasonDropMapFull:        {"drop_map_full", VerdictDrop},
	ReasonPassNotTracked:     {"pass_not_tracked", VerdictPass},
	ReasonPassCsumPartial:    {"pass_csum_partial", VerdictPass},
	ReasonDropSourceRange:    {"drop_source_range", VerdictDrop},
	ReasonRejectNoBackend:    {"reject_no_backend", VerdictRedirect},
	ReasonPassReject:         {"pass_reject", VerdictPass},
	ReasonSockFwd:            {"sock_fwd", VerdictRedirect},
	ReasonSockReject:         {"sock_reject", VerdictDrop},
	ReasonICMPFwd:            {"icmp_fwd", VerdictRedirect},
	ReasonICMPXlate:          {"icmp_xlate", VerdictPass},
	ReasonICMPFragNeeded:     {"icmp_frag_needed", VerdictRedirect},
	ReasonDropFragNeeded:     {"drop_frag_needed", VerdictDrop},
	ReasonPassICMPError:      {"pass_icmp_error", VerdictPass},
	ReasonFwdDSR:             {"fwd_dsr", VerdictRedirect},
	ReasonDSRDecap:           {"dsr_decap", VerdictPass},
	ReasonReplyDSR:           {"reply_dsr", VerdictPass},
	ReasonPassDSR:            {"pass_dsr", VerdictPass},
	ReasonDropDSRMalformed:   {"drop_dsr_malformed", VerdictDrop},
	ReasonDropDSRNoNode:      {"drop_dsr_no_node", VerdictDrop},
	ReasonFwdLocalPeer:       {"fwd_local_peer", VerdictRedirect},
	ReasonDSRDecapPeer:       {"dsr_decap_peer", VerdictRedirect},
	ReasonSkSteer:            {"sk_steer", VerdictRedirect},
	ReasonPassNoProxySocket:  {"pass_no_proxy_socket", VerdictPass},
	ReasonPassSkAssignFailed: {"pass_sk_assign_failed", VerdictPass},
	ReasonDropStateMigrating: {"drop_state_migrating", VerdictDrop},
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
	if int(r) < len(reasonTable) && reasonTable[r].name != "" {
		return reasonTable[r].name
	}
	return "unknown"
}

// IsDrop tells whether packets counted under r were dropped.
func (r Reason) IsDrop() bool {
	return int(r) < len(reasonTable) && reasonTable[r].verdict == VerdictDrop
}
