// Package explain answers "why does it not work?" on one node: for a
// frontend (IP:PORT), a Service (namespace/name[:port]) or an HTTP route
// (HOST/PATH), what the datapath and the L7 proxy would do with a new
// connection from a given client, and why, from the BPF maps as the
// datapath reads them and the proxy's live configuration.
//
// The agent runs a Server on a unix socket of its own, next to the trace
// socket (explain.sock); `nodegress explain` runs Ask.
//
// # Protocol
//
// One request, one answer, each one JSON object on one line. The client
// sends
//
//	{"version":1,"target":"default/web","from":"203.0.113.7","proto":"tcp"}
//
// (target is required; from, proto, via and tls are optional) and the
// server answers with one Answer line, {"version":1,...}, or
//
//	{"version":1,"error":"..."}
//
// and closes the connection. A request of another version, or with fields
// this agent does not know, is refused: an agent that ignored a newer
// client's field would answer a different question than the one asked.
package explain
