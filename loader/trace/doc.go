// Package trace streams datapath decisions from the running agent to
// `nodegress trace` clients over a unix socket.
//
// The agent runs a Server on top of the loader's event reader; the CLI runs
// Run. Tracing costs the datapath a ring buffer write per packet, so the
// server only switches it on while at least one client is connected.
//
// # Protocol
//
// Every message is one JSON object on one line. The client opens the
// connection by sending its Filter, for example
//
//	{"service":"default/web","verdict":"drop"}
//
// and sends nothing after that. The server answers with one of
//
//	{"type":"ready"}
//	{"type":"error","error":"..."}   (then closes the connection)
//
// and, once ready, streams until either side closes:
//
//	{"type":"event","time":"2025-01-02T10:31:07.123456789Z","device":"eth0",...}
//	{"type":"lost","lost":17}
//
// A "lost" message reports events that matched the client's filter but were
// dropped because the client did not read fast enough; it sits exactly where
// the gap is in the stream. Filters are evaluated by the server, so a client
// only costs the agent the events it asked for. A "lost" message with
// "where":"datapath" reports events the datapath could not write at all
// (its ring buffer was full) while the client was connected: every client
// lost those, whatever its filter; they are reported within a second.
//
// A filter with "snaplen" asks for packets' bytes (`nodegress trace
// --pcap`): while such a client is connected the server has the datapath
// copy up to the largest snap length asked for (at most loader.MaxSnaplen)
// and that client's event lines carry
//
//	"packet":{"in":"<base64>","out":"<base64>","out_len":74}
//
// with the frame as it came into the hook ("in"; "len" is its whole length)
// and, when the hook rewrote it, as the hook handed it on ("out",
// "out_len"). Lines to other clients never carry bytes. The client writes
// them as pcapng (package pcapng), one packet per frame with the decision as
// its comment.
//
// Unknown filter fields are rejected rather than ignored: an older agent
// that silently ignored a newer client's filter would show far more traffic
// than asked for.
//
// # Requests
//
// A filter with "requests":true (and optionally "host", "path", "status",
// "request_id") asks for the L7 proxy's requests instead of events. Such a
// client gets one line per finished request:
//
//	{"type":"request","id":"20f8…03","time":"…","node":"node1","method":"GET",
//	 "host":"site.test","path":"/app/items","proto":"HTTP/1.1","status":200,"bytes":403,
//	 "client":{"tuple":{…},"tls":false,"sni":"","alpn":"","steering":[{event}…],"drops":[]},
//	 "route":{"kind":"ingress","name":"default/site","host":"site.test","path":"/app","rule":-1},
//	 "upstream":{"service":"default/web:http","tuple":{…},"pod":"default/pod2a","node":"node2","drops":[]},
//	 "duration_ms":0.413,"upstream_ms":0.41,"retried":false,"error":""}
//
// (Request in requests.go has every field). The embedded events have the
// form of "event" lines. A record is self-contained: it names the node
// that took the request, so records of several agents can be merged.
// While a requests client is connected the server keeps the first
// decisions and the drops of recent connections in a bounded cache
// (conncache.go) and joins each request with its client and upstream
// connections' entries; the proxy builds records only then. The client
// connection's entries include its socket lookup (stage "sk-lookup"). While
// a requests client with "kernel_drops" is connected, a source that is an
// UpstreamWatcher has the proxy register each upstream connection it has
// open or dials with the kernel drop program, whose drops then join the
// records' upstream drops; the record of a failed request is joined a
// little later (failedJoinDelay), after the drops that failed it.
package trace
