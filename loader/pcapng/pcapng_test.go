package pcapng

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 5, 40, 1, 123456789, time.UTC)

func writeAll(t *testing.T, ifaces []Interface, pkts []Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, "nodegress test")
	if err != nil {
		t.Fatal(err)
	}
	for i, ifc := range ifaces {
		id, err := w.AddInterface(ifc)
		if err != nil {
			t.Fatal(err)
		}
		if id != uint32(i) {
			t.Fatalf("interface %d got ID %d", i, id)
		}
	}
	for _, p := range pkts {
		if err := w.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	ifaces := []Interface{
		{Name: "eth0", LinkType: LinkTypeEthernet, Snaplen: 256},
		{Name: "a-much-longer-name", LinkType: LinkTypeEthernet},
	}
	tests := []struct {
		name string
		pkt  Packet
	}{
		{"aligned with comment", Packet{Interface: 0, Time: t0, Data: []byte{1, 2, 3, 4}, OrigLen: 60, Comment: "xdp PASS fwd_local"}},
		{"one byte, no comment", Packet{Interface: 1, Time: t0.Add(time.Nanosecond), Data: []byte{9}, OrigLen: 1}},
		{"two bytes, odd comment", Packet{Interface: 1, Time: t0, Data: []byte{9, 8}, OrigLen: 1500, Comment: "svc=default/web"}},
		{"three bytes, unicode comment", Packet{Interface: 0, Time: t0, Data: []byte{7, 7, 7}, OrigLen: 3, Comment: "→ 10.0.0.1:80"}},
		{"no bytes", Packet{Interface: 0, Time: t0, Data: []byte{}, OrigLen: 0, Comment: "c"}},
	}
	var pkts []Packet
	for _, tt := range tests {
		pkts = append(pkts, tt.pkt)
	}
	b := writeAll(t, ifaces, pkts)
	if len(b)%4 != 0 {
		t.Fatalf("stream of %d bytes: not 32-bit aligned", len(b))
	}
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			want := tt.pkt
			if got.Interface != want.Interface || !got.Time.Equal(want.Time) || !bytes.Equal(got.Data, want.Data) ||
				got.OrigLen != want.OrigLen || got.Comment != want.Comment {
				t.Errorf("read back\n got %+v\nwant %+v", got, want)
			}
		})
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last packet: %v, want EOF", err)
	}
	if got := r.Interfaces(); len(got) != 2 || got[0] != ifaces[0] || got[1] != ifaces[1] {
		t.Errorf("interfaces %+v, want %+v", got, ifaces)
	}
}

// TestPacketBlockBytes pins an enhanced packet block byte for byte, as the
// pcapng specification lays it out.
func TestPacketBlockBytes(t *testing.T) {
	b := writeAll(t, []Interface{{Name: "lo", LinkType: LinkTypeEthernet}},
		[]Packet{{Time: time.Unix(0, 0x100000002), Data: []byte{0xaa, 0xbb, 0xcc}, OrigLen: 5, Comment: "hi"}})
	epb := b[len(b)-48:]
	le := binary.LittleEndian
	want := le.AppendUint32(nil, 6)  // type
	want = le.AppendUint32(want, 48) // length
	want = le.AppendUint32(want, 0)  // interface
	want = le.AppendUint32(want, 1)  // timestamp high
	want = le.AppendUint32(want, 2)  // timestamp low
	want = le.AppendUint32(want, 3)  // captured
	want = le.AppendUint32(want, 5)  // original
	want = append(want, 0xaa, 0xbb, 0xcc, 0)
	want = le.AppendUint16(want, 1) // opt_comment
	want = le.AppendUint16(want, 2)
	want = append(want, 'h', 'i', 0, 0)
	want = le.AppendUint32(want, 0) // opt_endofopt
	want = le.AppendUint32(want, 48)
	if !bytes.Equal(epb, want) {
		t.Errorf("packet block\n got % x\nwant % x", epb, want)
	}
}

func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name string
		pkt  Packet
		want string
	}{
		{"undescribed interface", Packet{Interface: 1, Time: t0, Data: []byte{1}, OrigLen: 1}, "only 1 interfaces"},
		{"original shorter than captured", Packet{Time: t0, Data: []byte{1, 2}, OrigLen: 1}, "captured from 1"},
		{"before 1970", Packet{Time: time.Unix(-1, 0), Data: []byte{1}, OrigLen: 1}, "before 1970"},
		{"comment too long", Packet{Time: t0, Data: []byte{1}, OrigLen: 1, Comment: strings.Repeat("x", 70000)}, "65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := NewWriter(io.Discard, "test")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.AddInterface(Interface{Name: "eth0", LinkType: LinkTypeEthernet}); err != nil {
				t.Fatal(err)
			}
			// The same writer accepts a good packet...
			if err := w.WritePacket(Packet{Time: t0, Data: []byte{1}, OrigLen: 1}); err != nil {
				t.Fatal(err)
			}
			// ...and refuses the bad one.
			err = w.WritePacket(tt.pkt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	good := writeAll(t, []Interface{{Name: "eth0", LinkType: LinkTypeEthernet}},
		[]Packet{{Time: t0, Data: []byte{1, 2, 3, 4, 5}, OrigLen: 5, Comment: "ok"}})
	shbLen := int(binary.LittleEndian.Uint32(good[4:]))
	corrupt := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	idbLen := int(binary.LittleEndian.Uint32(good[shbLen+4:]))
	epb := shbLen + idbLen
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"the good stream", good, ""},
		{"empty", nil, "section header"},
		{"not pcapng", []byte("GET / HTTP/1.1\r\n\r\n"), "not pcapng"},
		{"bad magic", corrupt(8, 0x11223344), "byte-order magic"},
		{"truncated packet", good[:len(good)-3], "unexpected EOF"},
		{"lengths differ", corrupt(len(good)-4, 999), "lengths differ"},
		{"huge block", corrupt(epb+4, 1<<30), "bad block length"},
		{"captured length past block", corrupt(epb+20, 1000), "captured bytes"},
		{"unknown interface", corrupt(epb+8, 7), "not described"},
		{"option overrun", corrupt(epb+36, 0x00ff0001), "overruns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := readAll(tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("good stream: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func readAll(b []byte) error {
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		return err
	}
	for {
		if _, err := r.Next(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// TestTcpdumpReads checks that libpcap, through tcpdump, reads the output:
// interfaces, nanosecond timestamps and packets.
func TestTcpdumpReads(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tcpdump not installed (scripts/install-deps.sh installs it)")
		}
		t.Skip("tcpdump not installed")
	}
	frame := []byte{
		// Ethernet
		0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00,
		// IPv4, UDP, 10.0.0.1 -> 10.0.0.2, 4 bytes of payload
		0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
		0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, 'p', 'i', 'n', 'g',
	}
	b := writeAll(t, []Interface{{Name: "eth0", LinkType: LinkTypeEthernet, Snaplen: 256}},
		[]Packet{{Time: t0, Data: frame, OrigLen: uint32(len(frame)), Comment: "xdp PASS fwd_local"}})
	cmd := exec.Command(tcpdump, "-r", "-", "-n", "-tt", "--nano")
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump: %v\n%s", err, out)
	}
	want := "1796535601.123456789 IP 10.0.0.1.12345 > 10.0.0.2.53:"
	if !strings.Contains(string(out), want) {
		t.Errorf("tcpdump printed\n%s\nwant a line with %q", out, want)
	}
}
