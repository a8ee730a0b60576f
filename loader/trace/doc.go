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
// only costs the agent the events it asked for.
//
// Unknown filter fields are rejected rather than ignored: an older agent
// that silently ignored a newer client's filter would show far more traffic
// than asked for.
package trace
