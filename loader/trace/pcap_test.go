package trace

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/loader/pcapng"
)

func (f *fakeSource) SetPacketCapture(snaplen int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaplens = append(f.snaplens, snaplen)
	return nil
}

func (f *fakeSource) captureCalls() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.snaplens)
}

// sourceOnly hides every method of a source but Source's.
type sourceOnly struct{ Source }

// capturedEvent is fwdEvent with the bytes of its packet, in and out.
func capturedEvent() loader.Event {
	ev := fwdEvent()
	in := make([]byte, 74)
	out := make([]byte, 74)
	for i := range in {
		in[i], out[i] = byte(i), byte(200-i)
	}
	ev.Packet = &loader.Captured{In: in, Out: out, OutLen: 74}
	return ev
}

// TestCaptureFollowsPcapClients checks that the datapath copies packets
// only while a pcap client is connected, as many bytes as the most
// demanding one asks for, within the datapath's limit.
func TestCaptureFollowsPcapClients(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, nil)
	waitCalls := func(what string, want ...int) {
		t.Helper()
		eventually(t, what, func() bool { return slices.Equal(src.captureCalls(), want) || len(src.captureCalls()) > len(want) })
		if got := src.captureCalls(); !slices.Equal(got, want) {
			t.Fatalf("%s: capture calls %v, want %v", what, got, want)
		}
	}
	// Switched off at start, whatever a previous agent left.
	waitCalls("capture reset at start", 0)

	plain := subscribe(t, path, Filter{})
	if got := src.captureCalls(); !slices.Equal(got, []int{0}) {
		t.Fatalf("plain client: capture calls %v, want none", got)
	}
	small := subscribe(t, path, Filter{Snaplen: 64})
	waitCalls("capture on for a pcap client", 0, 64)
	big := subscribe(t, path, Filter{Snaplen: 70000})
	waitCalls("the largest snap length, bounded", 0, 64, loader.MaxSnaplen)
	same := subscribe(t, path, Filter{Snaplen: 32}) // changes nothing yet
	big.conn.Close()
	waitCalls("back to the largest remaining", 0, 64, loader.MaxSnaplen, 64)
	small.conn.Close()
	waitCalls("down to the one left", 0, 64, loader.MaxSnaplen, 64, 32)
	same.conn.Close()
	waitCalls("capture off after the last pcap client", 0, 64, loader.MaxSnaplen, 64, 32, 0)
	eventually(t, "pcap clients to leave", func() bool { return s.clientCount() == 1 })
	if on, _ := src.state(); !on {
		t.Error("tracing switched off while a plain client is connected")
	}
	plain.conn.Close()
}

// TestPacketBytesOnlyToPcapClients checks that a packet's bytes go to the
// clients that asked for them and to no other.
func TestPacketBytesOnlyToPcapClients(t *testing.T) {
	src := newFakeSource()
	_, path := startServer(t, src, nil)
	plain := subscribe(t, path, Filter{})
	pcap := subscribe(t, path, Filter{Snaplen: 64})
	ev := capturedEvent()
	src.emit(t, ev)

	if l := plain.next(); l.Type != TypeEvent || l.Packet != nil {
		t.Errorf("plain client: got %+v, want an event without bytes", l.Record)
	}
	l := pcap.next()
	if l.Type != TypeEvent || l.Packet == nil {
		t.Fatalf("pcap client: got %+v, want an event with bytes", l.Record)
	}
	if !bytes.Equal(l.Packet.In, ev.Packet.In) || !bytes.Equal(l.Packet.Out, ev.Packet.Out) || l.Packet.OutLen != 74 {
		t.Errorf("pcap client: bytes %+v, want %+v", l.Packet, ev.Packet)
	}
}

func TestCaptureUnavailable(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, func(s *Server) { s.src = sourceOnly{src} })

	err := RunPcap(context.Background(), path, Filter{Snaplen: 64}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "packet capture: not available") {
		t.Fatalf("RunPcap: %v, want the capture refused", err)
	}
	if s.clientCount() != 0 {
		t.Error("refused client registered")
	}
	if on, _ := src.state(); on {
		t.Error("datapath tracing left on after the only client was refused")
	}
	subscribe(t, path, Filter{}) // everything else still served
}

// TestRunPcap checks the capture file: one interface per device, the
// packet as received and as sent with the decision as comment, cut to the
// snap length, and events without bytes left out and counted.
func TestRunPcap(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, nil)
	var out, status bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- RunPcap(context.Background(), path, Filter{Service: "default/web", Snaplen: 20, Count: 3}, &out, &status)
	}()
	eventually(t, "the client to subscribe", func() bool { return s.clientCount() == 1 })

	src.emit(t, capturedEvent())
	noBytes := fwdEvent()
	noBytes.Stage = loader.StageSock
	src.emit(t, noBytes)
	drop := capturedEvent()
	drop.Ifindex, drop.Verdict, drop.Reason = 9, loader.VerdictDrop, loader.ReasonDropNoBackend
	drop.Xlated = drop.Orig
	drop.Packet.Out = nil
	src.emit(t, drop)
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}

	r, err := pcapng.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	in := capturedEvent().Packet
	want := []struct {
		iface   uint32
		data    []byte
		comment string
	}{
		{0, in.In[:20], "xdp TX fwd_remote TCP 192.0.2.10:40000 > 10.0.0.1:30080 -> 10.0.0.1:61000 > 10.1.0.7:8080 svc=default/web:http/TCP backend=10.1.0.7:8080 (as received)"},
		{0, in.Out[:20], "xdp TX fwd_remote TCP 192.0.2.10:40000 > 10.0.0.1:30080 -> 10.0.0.1:61000 > 10.1.0.7:8080 svc=default/web:http/TCP backend=10.1.0.7:8080 (as sent)"},
		{1, in.In[:20], "xdp DROP drop_no_backend TCP 192.0.2.10:40000 > 10.0.0.1:30080 svc=default/web:http/TCP backend=10.1.0.7:8080 (as received)"},
	}
	for i, w := range want {
		p, err := r.Next()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if p.Interface != w.iface || !bytes.Equal(p.Data, w.data) || p.OrigLen != 74 || !p.Time.Equal(testTime) || p.Comment != w.comment {
			t.Errorf("packet %d:\n got %+v\nwant interface %d, % x, 74 bytes on the wire at %s, comment %q", i, p, w.iface, w.data, testTime, w.comment)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after %d packets: %v, want EOF", len(want), err)
	}
	ifaces := r.Interfaces()
	if len(ifaces) != 2 || ifaces[0].Name != "eth0" || ifaces[1].Name != "if9" ||
		ifaces[0].LinkType != pcapng.LinkTypeEthernet || ifaces[0].Snaplen != 20 {
		t.Errorf("interfaces %+v, want eth0 and if9, Ethernet, snap length 20", ifaces)
	}
	if got := status.String(); got != "1 matching events had no packet bytes and are not in the capture\n" {
		t.Errorf("status %q", got)
	}
}

func TestRunPcapRejectsBadArguments(t *testing.T) {
	path := socketPath(t) // never dialled: arguments are checked first
	for _, f := range []Filter{{Snaplen: 0}, {Snaplen: -1}, {Snaplen: 64, Proto: "icmp"}} {
		if err := RunPcap(context.Background(), path, f, io.Discard, io.Discard); err == nil || strings.Contains(err.Error(), "no agent") {
			t.Errorf("%+v: got %v, want the arguments refused", f, err)
		}
	}
	if err := RunPcap(context.Background(), path, Filter{Snaplen: 64}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "no agent") {
		t.Errorf("good arguments: got %v, want no agent", err)
	}
}

func TestNegativeSnaplenRefused(t *testing.T) {
	src := newFakeSource()
	_, path := startServer(t, src, nil)
	c := dialRaw(t, path, `{"snaplen":-5}`+"\n")
	if l := c.next(); l.Type != TypeError || !strings.Contains(l.Error, "snap length -5") {
		t.Errorf("got %q %q, want the snap length refused", l.Type, l.Error)
	}
	subscribe(t, path, Filter{Snaplen: 5}) // and a positive one accepted
}
