package trace

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"time"

	"github.com/nodegress/nodegress/loader"
)

// DefaultSocket is where the agent serves traces unless told otherwise.
const DefaultSocket = "/run/nodegress/trace.sock"

// Message types, the "type" field of every line the server sends.
const (
	TypeReady = "ready"
	TypeEvent = "event"
	TypeLost  = "lost"
	TypeError = "error"
)

// Tuple is a 5-tuple as it appears on the wire.
type Tuple struct {
	Proto string         `json:"proto"`
	Src   netip.AddrPort `json:"src"`
	Dst   netip.AddrPort `json:"dst"`
}

func tupleOf(t loader.Tuple) Tuple {
	return Tuple{Proto: t.Proto.String(), Src: t.Src, Dst: t.Dst}
}

// Record is one datapath event as it appears on the wire. Every field is
// always present so that line-oriented tools (jq) need no defaults; Xlated is
// null when the datapath reported no translation.
type Record struct {
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Device  string    `json:"device"`
	Ifindex uint32    `json:"ifindex"`
	Stage   string    `json:"stage"`
	Verdict string    `json:"verdict"`
	Reason  string    `json:"reason"`
	// Service and Backend are names as the agent knows them; empty when the
	// event carries no ID or the agent no longer knows it.
	Service   string `json:"service"`
	ServiceID uint32 `json:"service_id"`
	Backend   string `json:"backend"`
	BackendID uint32 `json:"backend_id"`
	Orig      Tuple  `json:"orig"`
	Xlated    *Tuple `json:"xlated"`
	Len       uint32 `json:"len"`
	// Location is where in the kernel a packet of stage "kernel" was
	// dropped (function+offset, or an address); empty for the datapath's
	// own decisions. Their Reason is the kernel's drop reason name, Orig
	// the client's flow and Xlated the packet as the kernel held it.
	Location string `json:"location"`
	// Packet is the packet's bytes, only on lines to clients that asked
	// for them (Filter.Snaplen) and only while the datapath copies them.
	Packet *Packet `json:"packet,omitempty"`
}

// LostInDatapath is the "where" of a lost notice for events the datapath
// could not write because its ring buffer was full: they are lost to every
// client, whatever its filter. A notice without "where" counts events
// that matched the client's filter but that it did not read fast enough.
const LostInDatapath = "datapath"

// notice is a control line: ready, lost or error.
type notice struct {
	Type  string `json:"type"`
	Lost  uint64 `json:"lost,omitempty"`
	Where string `json:"where,omitempty"`
	Error string `json:"error,omitempty"`
}

// line decodes any server line; the embedded Record's fields and the
// notice's extra fields do not overlap.
type line struct {
	Record
	Lost  uint64 `json:"lost"`
	Where string `json:"where"`
	Error string `json:"error"`
}

// reasonName keeps codes the agent does not know distinguishable from each
// other (a newer datapath behind an older agent).
func reasonName(r loader.Reason) string {
	if s := r.String(); s != "unknown" {
		return s
	}
	return "reason_" + strconv.FormatUint(uint64(r), 10)
}

func encodeNotice(n notice) []byte {
	b, _ := json.Marshal(n) // plain strings and integers cannot fail
	return append(b, '\n')
}
