package loader

import (
	"bytes"
	"net"
	"testing"
)

// A pod of the fib environment's node, behind the host end of its own veth
// pair (vpod0), as CNI plugins that route to pods set them up.
const (
	svcPod = 17
	fePod  = "10.0.0.1:30097"
)

var (
	bePod  = testBackend{id: 171, addr: "10.244.0.20:8080", local: true}
	podMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x03, 0x02}
)

// podRedirectHarness is remoteHarness with a local pod behind vpod0;
// redirect sets CFG_F_POD_REDIRECT and registers vpod0 as a peer device.
func podRedirectHarness(t *testing.T, env *fibEnv, redirect, registered bool) (*harness, net.HardwareAddr) {
	vpod, mac := addPodVeth(t, env, bePod.addrPort().Addr().String())
	h := remoteHarness(t, env)
	h.service(svcPod, fePod, TCP, false, bePod)
	if redirect {
		h.podRedirect(vpod, registered)
	}
	if !redirect && registered {
		h.podRedirect(vpod, true)
		cfg := h.config()
		cfg.Flags &^= cfgFlagPodRedirect
		h.setConfig(cfg)
	}
	return h, mac
}

// addPodVeth puts pod address addr of env's node behind the host end of
// its own veth pair, vpod0, and returns that end's ifindex and MAC.
func addPodVeth(t *testing.T, env *fibEnv, addr string) (uint32, net.HardwareAddr) {
	t.Helper()
	for _, args := range [][]string{
		{"link", "add", "vpod0", "type", "veth", "peer", "name", "vpod0p"},
		{"link", "set", "vpod0", "up"},
		{"link", "set", "vpod0p", "up"},
		{"route", "add", addr + "/32", "dev", "vpod0", "scope", "link"},
		{"neigh", "add", addr, "lladdr", podMAC.String(), "nud", "permanent", "dev", "vpod0"},
	} {
		env.ns.MustIP(args...)
	}
	l, err := env.ns.Link("vpod0")
	if err != nil {
		t.Fatal(err)
	}
	return uint32(l.Attrs().Index), l.Attrs().HardwareAddr
}

// podRedirect sets CFG_F_POD_REDIRECT and, when registered, registers
// ifindex as a peer device, as the agent does.
func (h *harness) podRedirect(ifindex uint32, registered bool) {
	h.t.Helper()
	cfg := h.config()
	cfg.Flags |= cfgFlagPodRedirect
	h.setConfig(cfg)
	if registered {
		if err := h.objs.PeerDevices.Put(ifindex, uint8(1)); err != nil {
			h.t.Fatal(err)
		}
	}
}

// TestPodRedirect: with pod redirect on, tc hands a local backend's packet
// straight to the pod's veth peer, DNAT'd and addressed as the host would
// have; XDP, an unregistered device or the setting off leave it to the
// host's routing as before.
func TestPodRedirect(t *testing.T) {
	tests := []struct {
		name                 string
		redirect, registered bool
		hook                 hook
		want                 Reason
	}{
		{name: "tc, registered", redirect: true, registered: true, hook: hookTCIngress, want: ReasonFwdLocalPeer},
		{name: "tc, device not registered", redirect: true, hook: hookTCIngress, want: ReasonFwdLocal},
		{name: "tc, setting off", registered: true, hook: hookTCIngress, want: ReasonFwdLocal},
		{name: "xdp", redirect: true, registered: true, hook: hookXDP, want: ReasonFwdLocal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := newFibEnv(t)
			h, vpodMAC := podRedirectHarness(t, env, tc.redirect, tc.registered)
			for _, flags := range []uint8{tcpSYN, tcpACK} {
				f := tcpFrame(clientAP, fePod, flags)
				in := f.bytes(t)
				if tc.want == ReasonFwdLocal {
					res := h.expect(tc.hook, in, VerdictPass, ReasonFwdLocal)
					if d := decode(t, res.pkt); d.dst() != bePod.addrPort() || d.src() != f.src {
						t.Errorf("passed up as %v -> %v, want %v -> %v", d.src(), d.dst(), f.src, bePod.addrPort())
					}
					continue
				}
				res := h.expect(tc.hook, in, VerdictRedirect, ReasonFwdLocalPeer)
				d := checkRoutedFrame(t, in, res.pkt, hop{smac: vpodMAC, dmac: podMAC})
				if d.dst() != bePod.addrPort() || d.src() != f.src {
					t.Errorf("handed to the pod as %v -> %v, want %v -> %v", d.src(), d.dst(), f.src, bePod.addrPort())
				}
			}
		})
	}
}

// TestDSRPodRedirect: on the backend's node, a decapsulated DSR packet for
// a pod behind a registered veth goes straight into the pod.
func TestDSRPodRedirect(t *testing.T) {
	ingress := dsrHarness(t, newFibEnv(t))
	benv := newFibEnv(t)
	vpod, vpodMAC := addPodVeth(t, benv, beDSR.addrPort().Addr().String())
	backendNode := newHarness(t)
	backendNode.ns, backendNode.ifindex = benv.ns, benv.ext0
	backendNode.podRedirect(vpod, true)

	encap := ingress.expect(hookTCIngress, tcpFrame(clientAP, feDSR, tcpSYN).bytes(t), VerdictRedirect, ReasonFwdDSR).pkt
	res := backendNode.expect(hookTCIngress, encap, VerdictRedirect, ReasonDSRDecapPeer)
	want := append(append([]byte(nil), podMAC...), vpodMAC...)
	want = append(want, encap[12:ethLen]...)
	want = append(want, encap[dsrInner:]...)
	if !bytes.Equal(res.pkt, want) {
		t.Errorf("handed to the pod\n% x\nwant\n% x", res.pkt, want)
	}
}
