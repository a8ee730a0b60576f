// Command nodegress is the node agent of nodegress and its tools: the agent
// itself, a live datapath trace, a dump of the pinned maps and cleanup.
package main

import (
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `nodegress: eBPF-accelerated node-local ingress for Kubernetes

Usage:
  nodegress agent   --standalone DIR --devices DEV[,DEV] [flags]   run the node agent
  nodegress trace   [--socket PATH] [--kernel-drops] [--requests] [--pcap FILE|-] [filters]
                                                                  stream datapath decisions (and kernel drops), or
                                                                  with --requests HTTP requests joined with them, live,
                                                                  or with --pcap the packets as pcapng
  nodegress explain [--from IP] [--proto tcp|udp] [--via ADDR:PORT] IP:PORT|NAMESPACE/NAME[:PORT]|HOST/PATH
                                                                  why a new connection is forwarded, steered or dropped
  nodegress maps    [--bpffs DIR]                                 show the pinned datapath state
  nodegress cleanup [--bpffs DIR]                                 detach and remove the datapath
  nodegress keep-listeners --socket PATH                          hold the proxy's listeners across agent restarts
  nodegress health  --socket PATH [--check healthz|readyz]        ask an agent's health socket (exec probe)
  nodegress version

Run "nodegress COMMAND -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var code int
	switch cmd {
	case "agent":
		code = runAgent(args)
	case "trace":
		code = runTrace(args)
	case "explain":
		code = runExplain(args)
	case "maps", "status":
		code = runMaps(args)
	case "cleanup":
		code = runCleanup(args)
	case "keep-listeners":
		code = runKeepListeners(args)
	case "health":
		code = runHealth(args)
	case "version", "--version":
		fmt.Println("nodegress", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "nodegress: unknown command %q\n\n%s", cmd, usage)
		code = 2
	}
	os.Exit(code)
}
