package loader

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Frames for BPF_PROG_TEST_RUN are built with gopacket, with lengths and
// checksums computed, then bent into shape where a case needs a malformed
// or unusual packet. Output frames are decoded with gopacket too, but their
// checksums are verified by an independent implementation (inetChecksum), so
// a mistake in one cannot hide a mistake in the other.

// TCP flag bits as they lie in byte 13 of the TCP header.
const (
	tcpFIN uint8 = 0x01
	tcpSYN uint8 = 0x02
	tcpRST uint8 = 0x04
	tcpPSH uint8 = 0x08
	tcpACK uint8 = 0x10
)

var (
	clientMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	nodeMAC   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

// frame describes one IPv4 TCP or UDP test packet.
type frame struct {
	src, dst netip.AddrPort
	proto    Proto
	flags    uint8 // TCP flags
	ttl      uint8 // 64 when 0
	tos      uint8
	options  []layers.IPv4Option
	payload  []byte
	// zeroUDPChecksum sends a UDP datagram without checksum (RFC 768).
	zeroUDPChecksum bool
	moreFragments   bool
	fragOffset      uint16 // in 8-byte units
	srcMAC, dstMAC  net.HardwareAddr
	// ts, when set, adds a TCP timestamp option, in the layout Linux
	// sends: after MSS and SACK-permitted on a SYN, after two NOPs on
	// other segments.
	ts *tcpTimestamps
}

// tcpTimestamps is a TCP timestamp option's TSval and TSecr.
type tcpTimestamps struct{ val, ecr uint32 }

func (ts tcpTimestamps) option() layers.TCPOption {
	data := binary.BigEndian.AppendUint32(nil, ts.val)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10,
		OptionData: binary.BigEndian.AppendUint32(data, ts.ecr)}
}

func (f frame) tcpOptions() []layers.TCPOption {
	if f.ts == nil {
		return nil
	}
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1}
	if f.flags&tcpSYN == 0 {
		return []layers.TCPOption{nop, nop, f.ts.option()}
	}
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		f.ts.option(),
		nop,
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	}
}

// timestampsOf returns the TCP timestamp option of a decoded frame.
func timestampsOf(d decoded) (tcpTimestamps, bool) {
	if d.tcp == nil {
		return tcpTimestamps{}, false
	}
	for _, o := range d.tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8 {
			return tcpTimestamps{binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:])}, true
		}
	}
	return tcpTimestamps{}, false
}

func tcpFrame(src, dst string, flags uint8) frame {
	return frame{
		src:     netip.MustParseAddrPort(src),
		dst:     netip.MustParseAddrPort(dst),
		proto:   TCP,
		flags:   flags,
		payload: []byte("hello"),
	}
}

func udpFrame(src, dst string) frame {
	return frame{
		src:     netip.MustParseAddrPort(src),
		dst:     netip.MustParseAddrPort(dst),
		proto:   UDP,
		payload: []byte("datagram payload"),
	}
}

// tuple is the frame's 5-tuple as the datapath keys it.
func (f frame) tuple() datapathFlowTuple {
	return tupleToBPF(Tuple{Src: f.src, Dst: f.dst, Proto: f.proto})
}

func (f frame) bytes(t testing.TB) []byte {
	t.Helper()
	srcMAC, dstMAC := f.srcMAC, f.dstMAC
	if srcMAC == nil {
		srcMAC = clientMAC
	}
	if dstMAC == nil {
		dstMAC = nodeMAC
	}
	ttl := f.ttl
	if ttl == 0 {
		ttl = 64
	}
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{
		Version:    4,
		TOS:        f.tos,
		Id:         0x1234,
		TTL:        ttl,
		SrcIP:      f.src.Addr().AsSlice(),
		DstIP:      f.dst.Addr().AsSlice(),
		Options:    f.options,
		FragOffset: f.fragOffset,
	}
	switch {
	case f.moreFragments:
		ip.Flags = layers.IPv4MoreFragments
	case f.fragOffset == 0 && f.proto == TCP:
		// As Linux sends TCP: DF set, which is no fragment.
		ip.Flags = layers.IPv4DontFragment
	}
	var l4 gopacket.SerializableLayer
	switch f.proto {
	case TCP:
		ip.Protocol = layers.IPProtocolTCP
		tcp := &layers.TCP{
			Options: f.tcpOptions(),
			SrcPort: layers.TCPPort(f.src.Port()),
			DstPort: layers.TCPPort(f.dst.Port()),
			Seq:     1000,
			Window:  65535,
			FIN:     f.flags&tcpFIN != 0,
			SYN:     f.flags&tcpSYN != 0,
			RST:     f.flags&tcpRST != 0,
			PSH:     f.flags&tcpPSH != 0,
			ACK:     f.flags&tcpACK != 0,
		}
		if tcp.ACK {
			tcp.Ack = 5000
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		l4 = tcp
	case UDP:
		ip.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.src.Port()), DstPort: layers.UDPPort(f.dst.Port())}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		l4 = udp
	default:
		t.Fatalf("frame: unsupported protocol %s", f.proto)
	}
	out := serialize(t, eth, ip, l4, gopacket.Payload(f.payload))
	if f.proto == UDP && f.zeroUDPChecksum {
		binary.BigEndian.PutUint16(out[l4Offset(out)+6:], 0)
	}
	return out
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// vlanFrame is f behind an 802.1Q tag.
func vlanFrame(t testing.TB, f frame) []byte {
	pkt := f.bytes(t)
	tagged := append([]byte(nil), pkt[:12]...)
	tagged = append(tagged, 0x81, 0x00, 0x00, 0x64)
	return append(tagged, pkt[12:]...)
}

// zeroSumUDP returns a UDP datagram from src to dst whose checksum becomes
// exactly 0 once it is translated to xsrc -> xdst: two payload bytes are
// chosen for that. UDP must then send 0xffff, as 0 means "no checksum".
func zeroSumUDP(t testing.TB, src, dst, xsrc, xdst string) frame {
	f := udpFrame(src, dst)
	f.payload = []byte{0, 0, 'z', 'e', 'r', 'o'}
	x := f
	x.src = netip.MustParseAddrPort(xsrc)
	x.dst = netip.MustParseAddrPort(xdst)
	pkt := x.bytes(t)
	off := l4Offset(pkt)
	binary.BigEndian.PutUint16(pkt[off+6:], 0)
	// The sum the checksum is the complement of, with the two bytes at 0.
	var pseudo uint32
	for i := ethLen + 12; i < ethLen+20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	// The IP length, not the frame's: gopacket pads frames to 60 bytes.
	pseudo += uint32(UDP) + uint32(binary.BigEndian.Uint16(pkt[ethLen+2:])) - uint32(off-ethLen)
	sum := ^inetChecksum(pseudo, pkt[off:ethLen+int(binary.BigEndian.Uint16(pkt[ethLen+2:]))])
	// Make the folded sum 0xffff, whose complement is 0.
	binary.BigEndian.PutUint16(f.payload, 0xffff-sum)
	return f
}

// arpFrame is a who-has for the node address.
func arpFrame(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         layers.ARPRequest,
		SourceHwAddress:   clientMAC,
		SourceProtAddress: []byte{192, 0, 2, 10},
		DstHwAddress:      make([]byte, 6),
		DstProtAddress:    []byte{10, 0, 0, 1},
	}
	return serialize(t, eth, arp)
}

// ipv6Frame is a TCP SYN over IPv6 to the frontend port.
func ipv6Frame(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: nodeMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{
		Version:    6,
		HopLimit:   64,
		NextHeader: layers.IPProtocolTCP,
		SrcIP:      net.ParseIP("2001:db8::10"),
		DstIP:      net.ParseIP("2001:db8::1"),
	}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 30080, SYN: true, Window: 65535}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return serialize(t, eth, ip, tcp)
}

// icmpFrame is an echo request from src to dst.
func icmpFrame(t testing.TB, src, dst string) []byte {
	eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: nodeMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{
		Version:  4,
		TTL:      64,
		Protocol: layers.IPProtocolICMPv4,
		SrcIP:    netip.MustParseAddr(src).AsSlice(),
		DstIP:    netip.MustParseAddr(dst).AsSlice(),
	}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}
	return serialize(t, eth, ip, icmp, gopacket.Payload("ping"))
}

// ipOptions fills an IPv4 header of ihl 32-bit words with a router alert
// option followed by no-ops; ihl 5 means no options.
func ipOptions(ihl int) []layers.IPv4Option {
	if ihl <= 5 {
		return nil
	}
	opts := []layers.IPv4Option{{OptionType: 0x94, OptionLength: 4, OptionData: []byte{0, 0}}}
	for range (ihl-5)*4 - 4 {
		opts = append(opts, layers.IPv4Option{OptionType: 1})
	}
	return opts
}

const ethLen = 14

func ihlOf(pkt []byte) int { return int(pkt[ethLen]&0x0f) * 4 }

func l4Offset(pkt []byte) int { return ethLen + ihlOf(pkt) }

// mutate returns a copy of pkt changed by fn: malformed packets start out
// as valid ones.
func mutate(pkt []byte, fn func(b []byte) []byte) []byte {
	return fn(append([]byte(nil), pkt...))
}

// inetChecksum is the RFC 1071 sum of data, folded and complemented.
func inetChecksum(initial uint32, data []byte) uint16 {
	sum := initial
	for i := 0; i+1 < len(data); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(data[i:]))
	}
	if len(data)%2 == 1 {
		sum += uint32(data[len(data)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// checkChecksums fails t unless the IPv4 header checksum and the TCP/UDP
// checksum of the Ethernet frame pkt are valid. A UDP checksum of 0 (none)
// is accepted; the return value tells whether it was 0.
func checkChecksums(t testing.TB, pkt []byte) (udpNoChecksum bool) {
	t.Helper()
	if len(pkt) < ethLen+20 || binary.BigEndian.Uint16(pkt[12:]) != 0x0800 {
		t.Fatalf("checksums: not an IPv4 frame: % x", pkt)
	}
	ihl := ihlOf(pkt)
	hdr := pkt[ethLen : ethLen+ihl]
	if c := inetChecksum(0, hdr); c != 0 {
		t.Errorf("IPv4 header checksum %#04x invalid (sum %#04x)", binary.BigEndian.Uint16(hdr[10:]), c)
	}
	totLen := int(binary.BigEndian.Uint16(hdr[2:]))
	seg := pkt[ethLen+ihl : ethLen+totLen]
	proto := hdr[9]
	if proto == uint8(UDP) && binary.BigEndian.Uint16(seg[6:]) == 0 {
		return true
	}
	var pseudo uint32
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(hdr[i:]))
	}
	pseudo += uint32(proto) + uint32(len(seg))
	if c := inetChecksum(pseudo, seg); c != 0 {
		t.Errorf("%s checksum invalid: % x", Proto(proto), seg)
	}
	return false
}

// decoded is an output frame taken apart.
type decoded struct {
	eth *layers.Ethernet
	ip  *layers.IPv4
	tcp *layers.TCP
	udp *layers.UDP
}

func decode(t testing.TB, pkt []byte) decoded {
	t.Helper()
	p := gopacket.NewPacket(pkt, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decode output: %v", el.Error())
	}
	var d decoded
	if l, ok := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); ok {
		d.eth = l
	}
	if l, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		d.ip = l
	}
	if l, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		d.tcp = l
	}
	if l, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		d.udp = l
	}
	if d.eth == nil || d.ip == nil || (d.tcp == nil && d.udp == nil) {
		t.Fatalf("decode output: not an IPv4 TCP/UDP frame: %v", p)
	}
	return d
}

// src and dst return the decoded frame's addresses and ports.
func (d decoded) src() netip.AddrPort {
	a, _ := netip.AddrFromSlice(d.ip.SrcIP)
	return netip.AddrPortFrom(a.Unmap(), d.port(true))
}

func (d decoded) dst() netip.AddrPort {
	a, _ := netip.AddrFromSlice(d.ip.DstIP)
	return netip.AddrPortFrom(a.Unmap(), d.port(false))
}

func (d decoded) port(src bool) uint16 {
	switch {
	case d.tcp != nil && src:
		return uint16(d.tcp.SrcPort)
	case d.tcp != nil:
		return uint16(d.tcp.DstPort)
	case src:
		return uint16(d.udp.SrcPort)
	default:
		return uint16(d.udp.DstPort)
	}
}

func (d decoded) payload() []byte {
	if d.tcp != nil {
		return d.tcp.Payload
	}
	return d.udp.Payload
}

// flowHash mirrors flow_hash in bpf/lib/hash.h, so tests know which backend
// and which SNAT port a flow gets. Fields are taken as the datapath loads
// them: network-order bytes read as native integers.
func flowHash(t datapathFlowTuple, seed uint32) uint32 {
	const initval = 0xdeadbeef
	rol := func(w uint32, s uint) uint32 { return w<<s | w>>(32-s) }
	a := t.Saddr + initval + seed
	b := t.Daddr + initval + seed
	c := (uint32(t.Sport)<<16 | uint32(t.Dport)) + initval + seed + uint32(t.Proto)
	c ^= b
	c -= rol(b, 14)
	a ^= c
	a -= rol(c, 11)
	b ^= a
	b -= rol(a, 25)
	c ^= b
	c -= rol(b, 16)
	a ^= c
	a -= rol(c, 4)
	b ^= a
	b -= rol(a, 14)
	c ^= b
	c -= rol(b, 24)
	return c
}

func TestChecksumHelpers(t *testing.T) {
	for _, f := range []frame{
		tcpFrame("192.0.2.10:40000", "10.0.0.1:30080", tcpSYN),
		udpFrame("192.0.2.10:40000", "10.0.0.1:30081"),
		func() frame {
			f := tcpFrame("192.0.2.10:40000", "10.0.0.1:30080", tcpACK)
			f.options = ipOptions(9)
			f.payload = []byte("odd")
			return f
		}(),
	} {
		pkt := f.bytes(t)
		checkChecksums(t, pkt)
		// A flipped address bit must be noticed.
		bad := mutate(pkt, func(b []byte) []byte { b[ethLen+15] ^= 1; return b })
		if inetChecksum(0, bad[ethLen:ethLen+ihlOf(bad)]) == 0 {
			t.Errorf("corrupted header passes the checksum")
		}
		d := decode(t, pkt)
		if d.src() != f.src || d.dst() != f.dst {
			t.Errorf("decode: %v -> %v, want %v -> %v", d.src(), d.dst(), f.src, f.dst)
		}
	}
	z := udpFrame("192.0.2.10:40000", "10.0.0.1:30081")
	z.zeroUDPChecksum = true
	if !checkChecksums(t, z.bytes(t)) {
		t.Errorf("zero UDP checksum not detected")
	}
}
