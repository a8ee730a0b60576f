package loader

import (
	"net/netip"
	"time"
)

// Stage is where in the datapath a decision was taken.
type Stage uint8

// Stages, as enum stage in bpf/lib/consts.h.
const (
	StageXDP       = Stage(datapathStageSTAGE_XDP)
	StageTCIngress = Stage(datapathStageSTAGE_TC_INGRESS)
	StageTCEgress  = Stage(datapathStageSTAGE_TC_EGRESS)
	// StageSock is the socket-level load balancer (cgroup hooks).
	StageSock = Stage(datapathStageSTAGE_SOCK)
	// StageKernel is the kernel dropping a packet of a tracked flow,
	// reported by trace_drop (tp_btf/kfree_skb).
	StageKernel = Stage(datapathStageSTAGE_KERNEL)
	// StageSkLookup is the socket lookup of a new connection to an L7
	// frontend (sk_steer): no packet, only the connection's tuple.
	StageSkLookup = Stage(datapathStageSTAGE_SK_LOOKUP)
)

func (s Stage) String() string {
	switch s {
	case StageXDP:
		return "xdp"
	case StageTCIngress:
		return "tc-ingress"
	case StageTCEgress:
		return "tc-egress"
	case StageSock:
		return "sock"
	case StageKernel:
		return "kernel"
	case StageSkLookup:
		return "sk-lookup"
	default:
		return "unknown"
	}
}

// Verdict is what the datapath did with a packet.
type Verdict uint8

// Verdicts, as enum verdict in bpf/lib/consts.h.
const (
	VerdictPass     = Verdict(datapathVerdictVERDICT_PASS)
	VerdictTX       = Verdict(datapathVerdictVERDICT_TX)
	VerdictRedirect = Verdict(datapathVerdictVERDICT_REDIRECT)
	VerdictDrop     = Verdict(datapathVerdictVERDICT_DROP)
)

func (v Verdict) String() string {
	switch v {
	case VerdictPass:
		return "PASS"
	case VerdictTX:
		return "TX"
	case VerdictRedirect:
		return "REDIRECT"
	case VerdictDrop:
		return "DROP"
	default:
		return "UNKNOWN"
	}
}

// Tuple is an IPv4 5-tuple.
type Tuple struct {
	Src   netip.AddrPort
	Dst   netip.AddrPort
	Proto Proto
}

func (t Tuple) String() string {
	return t.Proto.String() + " " + t.Src.String() + " -> " + t.Dst.String()
}

// Event is one datapath decision read from the events ring buffer.
type Event struct {
	// Time is the wall-clock time of the decision.
	Time      time.Time
	Ifindex   uint32
	Stage     Stage
	Verdict   Verdict
	Reason    Reason
	ServiceID uint32
	BackendID uint32
	Orig      Tuple
	Xlated    Tuple
	Length    uint32
	// KernelDrop is set on events of StageKernel: the kernel dropped the
	// packet Xlated (as it held it) of the flow Orig (client -> frontend).
	KernelDrop *KernelDrop
	// Packet is the packet's bytes while packet capture is on
	// (SetPacketCapture); nil otherwise and for socket-level decisions.
	Packet *Captured
}
