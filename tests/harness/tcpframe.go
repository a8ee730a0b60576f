package harness

import (
	byteorder "encoding/binary"
	"net/netip"
)

// TCP header flags a test looks at.
const (
	TCPFlagSYN = 0x02
	TCPFlagACK = 0x10
)

// TCPSegment is what a test reads of a captured Ethernet/IPv4/TCP frame.
type TCPSegment struct {
	Src, Dst netip.AddrPort
	Flags    uint8
}

// IsSYN reports a connection's first segment (SYN without ACK).
func (s TCPSegment) IsSYN() bool { return s.Flags&(TCPFlagSYN|TCPFlagACK) == TCPFlagSYN }

// ParseTCP reads an Ethernet/IPv4/TCP frame's addresses, ports and flags;
// false for any other frame or one cut before the TCP flags.
func ParseTCP(b []byte) (TCPSegment, bool) {
	if len(b) < 14+20 || byteorder.BigEndian.Uint16(b[12:]) != 0x0800 {
		return TCPSegment{}, false
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[9] != 6 || ihl < 20 || len(ip) < ihl+14 {
		return TCPSegment{}, false
	}
	tcp := ip[ihl:]
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	return TCPSegment{
		Src:   netip.AddrPortFrom(src, byteorder.BigEndian.Uint16(tcp)),
		Dst:   netip.AddrPortFrom(dst, byteorder.BigEndian.Uint16(tcp[2:])),
		Flags: tcp[13],
	}, true
}
