package e2e

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/loader/pcapng"
	"github.com/nodegress/nodegress/tests/harness"
	"github.com/nodegress/nodegress/tests/netns"
)

// TestTracePcap runs `nodegress trace --pcap -` while a client uses a
// NodePort: the capture holds the client's SYN to the NodePort as the node
// received it and, right after, the same SYN translated to the pod, both
// with a comment naming the decision and the service; tcpdump reads the
// capture.
func TestTracePcap(t *testing.T) {
	tp := netns.SingleNode(t, 1)
	pod := tp.Pod("pod1a")
	c := newCluster(t, tp, []int{1}, harness.Service{Name: "captured", Ports: []harness.Port{http80(30123)}, Endpoints: harness.Endpoints(pod)})
	agent := c.agents[0]
	frontend := addrPort(c.node(1).Addr, 30123)
	backend := addrPort(pod.Addr, harness.PodHTTPPort)
	c.waitServed(frontend, 5*settle)

	out := runTrace(t, c, agent, frontend, "--pcap", "-", "--snaplen", "96", "--port", "30123", "--count", "40")
	r, err := pcapng.NewReader(strings.NewReader(out))
	if err != nil {
		t.Fatalf("read the capture: %v", err)
	}
	var (
		pkts       []pcapng.Packet
		synIn      = -1
		synOut     = -1
		withoutSvc int
	)
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read the capture: %v", err)
		}
		if len(p.Data) > 96 {
			t.Errorf("packet of %d bytes captured with --snaplen 96", len(p.Data))
		}
		if !strings.Contains(p.Comment, "svc=default/captured") {
			withoutSvc++
		}
		seg, ok := harness.ParseTCP(p.Data)
		if ok && seg.IsSYN() {
			switch {
			case seg.Dst == frontend && synIn < 0 && strings.HasSuffix(p.Comment, "(as received)"):
				synIn = len(pkts)
			case seg.Dst == backend && synIn >= 0 && synOut < 0:
				synOut = len(pkts)
			}
		}
		pkts = append(pkts, p)
	}
	defer func() {
		if t.Failed() {
			for i, p := range pkts {
				t.Logf("packet %d: %d of %d bytes, %s", i, len(p.Data), p.OrigLen, p.Comment)
			}
		}
	}()
	if synIn < 0 {
		t.Fatalf("no SYN to %s as received in %d packets", frontend, len(pkts))
	}
	in := pkts[synIn]
	if want := loader.ReasonFwdLocal.String(); !strings.Contains(in.Comment, want) || !strings.Contains(in.Comment, "-> ") ||
		!strings.Contains(in.Comment, backend.String()) {
		t.Errorf("SYN's comment %q: want %s and the translation to %s", in.Comment, want, backend)
	}
	if synOut != synIn+1 {
		t.Fatalf("SYN to %s at packet %d, its translation to %s at %d: want it right after", frontend, synIn, backend, synOut)
	}
	out2 := pkts[synOut]
	if !strings.HasSuffix(out2.Comment, "(as sent)") || !strings.Contains(out2.Comment, "svc=default/captured") {
		t.Errorf("translated SYN's comment %q: want the service, as sent", out2.Comment)
	}
	if seg, _ := harness.ParseTCP(out2.Data); !strings.HasPrefix(seg.Src.String(), netns.ClientIP.String()+":") {
		t.Errorf("translated SYN from %s: want the client %s (a local backend: no SNAT)", seg.Src, netns.ClientIP)
	}
	if withoutSvc != 0 {
		t.Errorf("%d packets without the service in their comment, want none (--port filters the service's flows)", withoutSvc)
	}
	if r.Interfaces()[in.Interface].Name == "" {
		t.Error("the SYN's interface has no name")
	}

	// libpcap (tcpdump) reads the same capture.
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tcpdump not installed (scripts/install-deps.sh installs it)")
		}
		t.Skip("tcpdump not installed")
	}
	cmd := exec.Command(tcpdump, "-r", "-", "-n")
	cmd.Stdin = strings.NewReader(out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	text, err := cmd.Output()
	if err != nil {
		t.Fatalf("tcpdump -r -: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{
		" > " + frontend.Addr().String() + "." + "30123" + ": Flags [S]",
		" > " + backend.Addr().String() + "." + strconv.Itoa(int(backend.Port())) + ": Flags [S]",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("tcpdump shows no %q:\n%s", want, text)
		}
	}
}
