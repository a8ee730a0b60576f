package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestKernelDropsFollowClients(t *testing.T) {
	src := newFakeSource()
	s, path := startServer(t, src, nil)

	plain := subscribe(t, path, Filter{})
	if on, calls := src.kernelState(); on || len(calls) != 0 {
		t.Fatalf("plain client: kernel drops on=%v calls=%v, want untouched", on, calls)
	}
	a := subscribe(t, path, Filter{KernelDrops: true})
	b := subscribe(t, path, Filter{KernelDrops: true, Verdict: "drop"})
	if on, calls := src.kernelState(); !on || !slices.Equal(calls, []bool{true}) {
		t.Fatalf("two kernel drop clients: on=%v calls=%v, want attached once", on, calls)
	}
	a.conn.Close()
	eventually(t, "first kernel drop client to leave", func() bool { return s.clientCount() == 2 })
	if on, _ := src.kernelState(); !on {
		t.Fatal("detached while a kernel drop client is connected")
	}
	b.conn.Close()
	eventually(t, "detach after the last kernel drop client", func() bool {
		on, _ := src.kernelState()
		return !on
	})
	if on, _ := src.state(); !on {
		t.Error("datapath tracing switched off while a client is connected")
	}
	plain.conn.Close()
}

func TestKernelDropsUnavailable(t *testing.T) {
	src := newFakeSource()
	src.kernelErr = errors.New("attach tp_btf/kfree_skb: no BTF")
	s, path := startServer(t, src, nil)

	var out bytes.Buffer
	err := Run(context.Background(), path, Filter{KernelDrops: true}, &out, FormatText)
	if err == nil || !strings.Contains(err.Error(), "kernel drops: attach tp_btf/kfree_skb: no BTF") {
		t.Fatalf("Run: %v, want the attach error", err)
	}
	if s.clientCount() != 0 {
		t.Error("refused client registered")
	}
	if on, _ := src.state(); on {
		t.Error("datapath tracing left on after the only client was refused")
	}
	// The agent keeps serving everything else.
	subscribe(t, path, Filter{})
}

func TestKernelDropFiltering(t *testing.T) {
	tests := []struct {
		name   string
		filter Filter
		want   bool
	}{
		{"not asked for", Filter{}, false},
		{"asked for", Filter{KernelDrops: true}, true},
		{"client address", Filter{KernelDrops: true, Addr: "192.0.2.10"}, true},
		{"backend address as dropped", Filter{KernelDrops: true, Addr: "10.1.0.0/24"}, true},
		{"other address", Filter{KernelDrops: true, Addr: "198.51.100.1"}, false},
		{"frontend port", Filter{KernelDrops: true, Port: 30080}, true},
		{"other port", Filter{KernelDrops: true, Port: 81}, false},
		{"service", Filter{KernelDrops: true, Service: "default/web"}, true},
		{"other service", Filter{KernelDrops: true, Service: "kube-system"}, false},
		{"verdict drop", Filter{KernelDrops: true, Verdict: "drop"}, true},
		{"verdict pass", Filter{KernelDrops: true, Verdict: "pass"}, false},
		{"kernel reason", Filter{KernelDrops: true, Reason: "no_socket"}, true},
		{"other kernel reason", Filter{KernelDrops: true, Reason: "IP_NOROUTE"}, false},
		{"datapath reason", Filter{KernelDrops: true, Reason: "drop_no_backend"}, false},
		{"device", Filter{KernelDrops: true, Device: "eth0"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.filter.compile()
			if err != nil {
				t.Fatal(err)
			}
			ev := kernelDropEvent()
			if got := m.match(&ev, "eth0", "default/web:http/TCP"); got != tc.want {
				t.Errorf("match = %v, want %v", got, tc.want)
			}
		})
	}

	// A kernel reason name means nothing without --kernel-drops.
	err := Filter{Reason: "NO_SOCKET"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "--kernel-drops") {
		t.Errorf("kernel reason without kernel drops: %v, want a hint at --kernel-drops", err)
	}
	// Datapath events still match datapath reasons next to kernel ones.
	m, err := Filter{KernelDrops: true, Reason: "fwd_remote,NO_SOCKET"}.compile()
	if err != nil {
		t.Fatal(err)
	}
	fwd, kd := fwdEvent(), kernelDropEvent()
	if !m.match(&fwd, "eth0", "") || !m.match(&kd, "eth0", "") {
		t.Error("mixed reason list: want both the datapath and the kernel event")
	}
}

func TestKernelDropOutput(t *testing.T) {
	src := newFakeSource()
	_, path := startServer(t, src, nil)

	run := func(format Format) string {
		t.Helper()
		var out bytes.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, path, Filter{KernelDrops: true, Addr: "192.0.2.10", Count: 1}, &out, format)
		}()
		eventually(t, "kernel drop tracing on", func() bool {
			on, _ := src.kernelState()
			return on
		})
		src.emit(t, kernelDropEvent())
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Fatal("Run did not stop after one event")
		}
		cancel()
		eventually(t, "kernel drop tracing off", func() bool {
			on, _ := src.kernelState()
			return !on
		})
		return out.String()
	}

	var rec Record
	js := run(FormatJSON)
	if err := json.Unmarshal([]byte(js), &rec); err != nil {
		t.Fatalf("json output %q: %v", js, err)
	}
	want := Record{
		Type: TypeEvent, Time: testTime, Device: "eth0", Ifindex: 2, Stage: "kernel", Verdict: "DROP",
		Reason: "NO_SOCKET", Service: "default/web:http/TCP", ServiceID: 1, Backend: "10.1.0.7:8080", BackendID: 7,
		Orig:     Tuple{Proto: "TCP", Src: ap("192.0.2.10:40000"), Dst: ap("10.0.0.1:30080")},
		Xlated:   &Tuple{Proto: "TCP", Src: ap("192.0.2.10:40000"), Dst: ap("10.1.0.7:8080")},
		Len:      60,
		Location: "tcp_v4_rcv+0x1b2",
	}
	if !equalLine(line{Record: rec}, line{Record: want}) {
		t.Errorf("json:\ngot  %+v\nwant %+v", rec, want)
	}

	text := run(FormatText)
	if !strings.Contains(text, " eth0 ") {
		t.Errorf("text %q: want the device of the agent's namespace", text)
	}

	// A drop in a pod's namespace names the namespace, not a device of
	// the agent's that has the same index.
	var pod bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, path, Filter{KernelDrops: true, Count: 1}, &pod, FormatJSON) }()
	eventually(t, "kernel drop tracing on", func() bool {
		on, _ := src.kernelState()
		return on
	})
	ev := kernelDropEvent()
	ev.Ifindex, ev.KernelDrop.Netns = 0, 4026532000
	src.emit(t, ev)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(pod.Bytes(), &rec); err != nil || rec.Device != "netns:4026532000" {
		t.Errorf("pod drop %q: device %q, want netns:4026532000 (%v)", pod.String(), rec.Device, err)
	}
	for _, s := range []string{" kernel ", " DROP ", " NO_SOCKET ", "TCP 192.0.2.10:40000 > 10.0.0.1:30080 -> 192.0.2.10:40000 > 10.1.0.7:8080", " at=tcp_v4_rcv+0x1b2\n"} {
		if !strings.Contains(text, s) {
			t.Errorf("text %q: missing %q", text, s)
		}
	}
}
