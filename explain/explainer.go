package explain

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/nodegress/nodegress/l7proxy"
	"github.com/nodegress/nodegress/loader"
)

// Datapath is the live datapath state; the loader's Datapath implements it.
type Datapath interface {
	Programmed() ([]loader.ProgrammedService, error)
}

// Router answers route questions from the proxy's live configuration; the
// l7proxy's Proxy implements it.
type Router interface {
	ExplainRoute(q l7proxy.RouteQuery) l7proxy.RouteAnswer
}

// Explainer answers queries on one node.
type Explainer struct {
	Datapath Datapath
	// Stats reads the datapath's counters by reason (nil: none shown).
	Stats func() (map[loader.Reason]loader.Counter, error)
	// Routes is the L7 proxy; nil when the agent runs without it.
	Routes Router
	// PodRedirect: the agent runs with --pod-redirect, so tc hands
	// packets for local pods straight into them.
	PodRedirect bool
	// Owners names the pod ("namespace/name") and node behind a backend
	// address of a datapath service, from its EndpointSlices (nil, or
	// empty answers: addresses only).
	Owners func(service string, addr netip.Addr) (pod, node string)
}

// Explain answers q, which Validate accepted.
func (e *Explainer) Explain(q Query) Answer {
	a := Answer{Version: Version, Target: q.Target, From: q.From}
	if !a.From.IsValid() {
		a.From = DefaultClient
	}
	fail := func(err error) Answer {
		return Answer{Version: Version, Target: q.Target, Error: err.Error()}
	}
	t, err := parseTarget(q.Target)
	if err != nil {
		return fail(err)
	}
	svcs, err := e.Datapath.Programmed()
	if err != nil {
		return fail(fmt.Errorf("read the datapath's maps: %w", err))
	}
	var counts map[loader.Reason]loader.Counter
	if e.Stats != nil {
		counts, _ = e.Stats() // the verdicts stand without counters
	}
	v := verdicts{client: a.From, counts: counts, podRedirect: e.PodRedirect, owners: e.Owners}
	switch t.kind {
	case targetFrontend:
		a.Frontends = v.frontend(svcs, t.frontend, q.Proto)
	case targetService:
		a.Frontends = v.service(svcs, t.service, t.port, q.Proto)
		if len(a.Frontends) == 0 {
			return fail(fmt.Errorf("no service %s%s is programmed in the datapath on this node (wrong name, no frontend here, or not synced yet)", t.service, portSuffix(t.port)))
		}
	case targetRoute:
		if q.Via.IsValid() {
			a.Frontends = v.frontend(svcs, q.Via, "tcp")
		}
		if e.Routes == nil {
			return fail(fmt.Errorf("the L7 proxy does not run in this agent: no route for %s", q.Target))
		}
		r := e.Routes.ExplainRoute(l7proxy.RouteQuery{Frontend: q.Via, Host: t.host, Path: t.path, Client: a.From, TLS: t.tls || q.TLS})
		a.Route = &r
	}
	return a
}

func portSuffix(p string) string {
	if p == "" {
		return ""
	}
	return ":" + p
}

// matchesProto tells whether p matches the query's protocol ("": any).
func matchesProto(p loader.Proto, want string) bool {
	return want == "" || strings.EqualFold(p.String(), want)
}

// serviceMatches tells whether a datapath service name
// ("namespace/name:port/PROTO", "/internal" for socket frontends) is
// service name and port (empty: any).
func serviceMatches(full, name, port string) bool {
	rest, ok := strings.CutPrefix(full, name+":")
	if !ok {
		return false
	}
	id, _, _ := strings.Cut(rest, "/")
	return port == "" || id == port
}

// verdicts states the datapath's decisions for one client.
type verdicts struct {
	client      netip.Addr
	counts      map[loader.Reason]loader.Counter
	podRedirect bool
	owners      func(service string, addr netip.Addr) (pod, node string)
}

func (v verdicts) frontend(svcs []loader.ProgrammedService, ap netip.AddrPort, proto string) []FrontendAnswer {
	var out []FrontendAnswer
	for i := range svcs {
		for _, fe := range svcs[i].Frontends {
			if fe.Addr == ap.Addr() && fe.Port == ap.Port() && matchesProto(fe.Proto, proto) {
				out = append(out, v.answer(&svcs[i], fe))
			}
		}
	}
	if len(out) == 0 {
		p := strings.ToUpper(proto)
		if p == "" {
			p = "TCP/UDP"
		}
		out = append(out, FrontendAnswer{
			Frontend: ap.String(), Proto: p, Kind: "none", Backends: []BackendAnswer{},
			Verdict: v.verdict("pass", loader.ReasonPassNoFrontend,
				"no frontend at this address and port on this node: the datapath passes the packet to the kernel untouched (a local socket or routing decides)"),
		})
	}
	return out
}

func (v verdicts) service(svcs []loader.ProgrammedService, name, port, proto string) []FrontendAnswer {
	var out []FrontendAnswer
	for i := range svcs {
		if !serviceMatches(svcs[i].Name, name, port) {
			continue
		}
		for _, fe := range svcs[i].Frontends {
			if matchesProto(fe.Proto, proto) {
				out = append(out, v.answer(&svcs[i], fe))
			}
		}
	}
	return out
}

// answer describes one programmed frontend and decides a new flow from
// the client, in the order lb_frontend (bpf/lib/lb.h) checks.
func (v verdicts) answer(ps *loader.ProgrammedService, fe loader.FrontendEntry) FrontendAnswer {
	a := FrontendAnswer{
		Frontend:   fe.Frontend.String(),
		Proto:      fe.Proto.String(),
		Service:    ps.Name,
		ServiceID:  fe.ServiceID,
		Kind:       "L4",
		Restricted: fe.Restricted,
		Backends:   v.backendsOf(ps),
		Drift:      ps.Drift,
	}
	if a.Service == "" {
		a.Service = fmt.Sprintf("(service id %d, unknown to this agent)", fe.ServiceID)
	}
	switch {
	case fe.L7:
		a.Kind = "L7"
		a.Verdict = v.decide(ps, fe)
		return a // the proxy balances: the datapath's settings do not apply
	case fe.Internal:
		a.Kind = "socket"
	}
	a.Forwarding, a.Selection, a.NoBackend = "SNAT", "hash", "reject"
	if fe.DSR {
		a.Forwarding = "DSR"
	}
	if fe.Maglev {
		a.Selection = "Maglev"
	}
	if fe.NoBackendDrop {
		a.NoBackend = "drop"
	}
	if fe.AffinityTimeout > 0 {
		a.Affinity = "ClientIP for " + fe.AffinityTimeout.String()
	}
	for _, p := range ps.SourceRanges {
		a.SourceRanges = append(a.SourceRanges, p.String())
	}
	if fe.BackendCount != len(ps.Active) {
		a.Drift = append(a.Drift, fmt.Sprintf("the frontend counts %d backends, the slots hold %d", fe.BackendCount, len(ps.Active)))
	}
	a.Verdict = v.decide(ps, fe)
	return a
}

func (v verdicts) backendsOf(ps *loader.ProgrammedService) []BackendAnswer {
	out := []BackendAnswer{}
	seen := map[string]bool{}
	add := func(id uint32, b loader.Backend, state string) {
		addr := b.String()
		if !b.Addr.IsValid() {
			addr = "(missing)"
		}
		seen[addr] = true
		ba := BackendAnswer{ID: id, Address: addr, State: state, Local: b.Local}
		if v.owners != nil && b.Addr.IsValid() {
			ba.Pod, ba.Node = v.owners(ps.Name, b.Addr)
		}
		out = append(out, ba)
	}
	for _, b := range ps.Active {
		add(b.ID, b.Backend, "active")
	}
	if ps.Wanted != nil {
		for _, b := range ps.Wanted.Backends {
			if b.Terminating && !seen[b.String()] {
				add(0, b, "draining")
			}
		}
	}
	return out
}

func (v verdicts) decide(ps *loader.ProgrammedService, fe loader.FrontendEntry) Verdict {
	if fe.Internal {
		return v.verdict("forward", loader.ReasonSockFwd, fmt.Sprintf(
			"in-cluster clients' connect() and sendmsg() to %s are sent to %s by the socket-level load balancer; packets from outside the node are not looked up at socket scope",
			fe.Frontend, v.choice(ps, fe)))
	}
	if fe.L7 {
		listener := "listener"
		if ps.ProxyListener != "" {
			listener = "listener " + ps.ProxyListener
		}
		if ps.ProxySocket == loader.SocketMissing {
			return v.verdict("pass", loader.ReasonPassL7, fmt.Sprintf(
				"passed to the kernel for the L7 proxy, but no socket of its %s is registered (proxy_sockets): the kernel's own lookup decides, refused unless something listens on %s", listener, fe.Frontend))
		}
		return v.verdict("steer", loader.ReasonPassL7, fmt.Sprintf(
			"steered to the L7 proxy's %s (sk_lookup): the proxy routes each request by host and path; ask for HOST/PATH (with --via for this frontend) to see the route", listener))
	}
	if fe.Restricted && !v.inRanges(ps.SourceRanges) {
		return v.verdict("drop", loader.ReasonDropSourceRange, fmt.Sprintf(
			"dropped: source %s is not in the service's loadBalancerSourceRanges %v", v.client, ps.SourceRanges))
	}
	if fe.BackendCount == 0 {
		if fe.NoBackendDrop {
			return v.verdict("drop", loader.ReasonDropNoBackend,
				"dropped: no endpoint this traffic may use on this node (externalTrafficPolicy Local without a ready local endpoint; the service has endpoints elsewhere)")
		}
		return v.verdict("reject", loader.ReasonRejectNoBackend,
			"rejected: the service has no ready endpoint; the client gets ICMP port unreachable (connection refused)")
	}
	prefix := ""
	if fe.Restricted {
		prefix = fmt.Sprintf("source %s is in the loadBalancerSourceRanges; ", v.client)
	}
	local, remote := 0, 0
	for _, b := range ps.Active {
		if b.Local {
			local++
		} else {
			remote++
		}
	}
	reason := loader.ReasonFwdLocal
	how := "DNAT"
	if v.podRedirect {
		// tc hands the packet into the pod when it knows the pod's
		// device, else the kernel delivers it (fwd_local).
		reason, how = loader.ReasonFwdLocalPeer, "DNAT, handed straight into the pod by tc (--pod-redirect; fwd_local through the kernel where the pod's device is unknown)"
	}
	switch {
	case remote > 0 && fe.DSR:
		reason, how = loader.ReasonFwdDSR, "direct server return to the backend's node (GENEVE; SNAT where the backend shares this node's link)"
	case remote > 0:
		reason, how = loader.ReasonFwdRemote, "DNAT and SNAT to this node's address, sent out to the backend's node"
	}
	if local > 0 && remote > 0 {
		how = "DNAT for those on this node, for the others " + how
	}
	text := fmt.Sprintf("%sforwarded to %s via %s", prefix, v.choice(ps, fe), how)
	if fe.AffinityTimeout > 0 {
		text += fmt.Sprintf("; ClientIP affinity: a client's new flows keep its last backend for %s", fe.AffinityTimeout)
	}
	return v.verdict("forward", reason, text)
}

// choice names the backend a new flow gets, or how it is picked.
func (v verdicts) choice(ps *loader.ProgrammedService, fe loader.FrontendEntry) string {
	if len(ps.Active) == 1 {
		return v.describeBackend(ps.Name, ps.Active[0])
	}
	if len(ps.Active) == 0 {
		return "no backend"
	}
	by := "flow hash"
	if fe.Maglev {
		by = "Maglev hash (the same on every node)"
	}
	return fmt.Sprintf("one of %d backends by %s", len(ps.Active), by)
}

// describeBackend is "addr:port (pod ns/name on node)", with what is known.
func (v verdicts) describeBackend(svc string, b loader.BackendEntry) string {
	var pod, node string
	if v.owners != nil {
		pod, node = v.owners(svc, b.Addr)
	}
	where := "remote"
	if b.Local {
		where = "on this node"
	}
	switch {
	case pod != "" && node != "":
		return fmt.Sprintf("%s (pod %s on %s, %s)", b.Backend, pod, node, where)
	case pod != "":
		return fmt.Sprintf("%s (pod %s, %s)", b.Backend, pod, where)
	}
	if b.Local {
		where = "pod on this node"
	}
	return fmt.Sprintf("%s (%s)", b.Backend, where)
}

func (v verdicts) inRanges(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(v.client) {
			return true
		}
	}
	return false
}

func (v verdicts) verdict(action string, r loader.Reason, text string) Verdict {
	out := Verdict{Action: action, Reason: r.String(), Text: text}
	if c, ok := v.counts[r]; ok {
		n := c.Packets
		out.Counted = &n
	}
	return out
}
