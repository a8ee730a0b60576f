package harness

import (
	"net/netip"
	"testing"
)

// tcpFrame builds an Ethernet/IPv4/TCP frame from 10.0.0.1:40000 to
// 10.0.0.2:30090 with the given flags, its IP header ihl words long.
func tcpFrame(etherType uint16, proto byte, ihl int, flags byte) []byte {
	b := make([]byte, 14+ihl*4+20)
	b[12], b[13] = byte(etherType>>8), byte(etherType)
	ip := b[14:]
	ip[0] = 0x40 | byte(ihl)
	ip[9] = proto
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	tcp := ip[ihl*4:]
	tcp[0], tcp[1] = 40000>>8, 40000&0xff
	tcp[2], tcp[3] = 30090>>8, 30090&0xff
	tcp[13] = flags
	return b
}

func TestParseTCP(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.0.0.1:40000"), netip.MustParseAddrPort("10.0.0.2:30090")
	for _, tc := range []struct {
		name  string
		frame []byte
		ok    bool
		syn   bool
	}{
		{name: "SYN", frame: tcpFrame(0x0800, 6, 5, TCPFlagSYN), ok: true, syn: true},
		{name: "SYN-ACK", frame: tcpFrame(0x0800, 6, 5, TCPFlagSYN|TCPFlagACK), ok: true},
		{name: "IP options", frame: tcpFrame(0x0800, 6, 6, TCPFlagSYN), ok: true, syn: true},
		{name: "UDP", frame: tcpFrame(0x0800, 17, 5, 0)},
		{name: "IPv6 ethertype", frame: tcpFrame(0x86dd, 6, 5, TCPFlagSYN)},
		{name: "header length below 20", frame: tcpFrame(0x0800, 6, 4, TCPFlagSYN)},
		{name: "cut before the flags", frame: tcpFrame(0x0800, 6, 5, TCPFlagSYN)[:14+20+13]},
		{name: "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seg, ok := ParseTCP(tc.frame)
			if ok != tc.ok {
				t.Fatalf("ParseTCP ok %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if seg.Src != src || seg.Dst != dst || seg.IsSYN() != tc.syn {
				t.Errorf("ParseTCP = %+v (SYN %v), want %s > %s, SYN %v", seg, seg.IsSYN(), src, dst, tc.syn)
			}
		})
	}
}
