// Command kubectl-nodegress is a kubectl plugin (`kubectl nodegress ...`)
// that runs nodegress's node-local tools in the agent pods of a cluster
// through the pods/exec API: `trace` on every node at once, its streams
// merged into one with each record tagged with its node, and `explain` on
// one node.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `kubectl nodegress runs nodegress's node tools in the agent pods.

Usage:
  kubectl nodegress trace   [--node NODE ...] [--output text|json] [trace flags]
  kubectl nodegress explain --node NODE [explain flags]

trace runs 'nodegress trace' in the agent of every node (or of each --node)
and merges their records into one stream, each tagged with its node: text
lines start with the node's name, JSON records carry "agent_node". It stops
on Ctrl-C or after --duration; a node whose agent cannot be reached is
reported and the others carry on (exit status 1 at the end). Every flag the
plugin does not know goes to 'nodegress trace' unchanged (--service,
--kernel-drops, --count, ...; --count applies per node). --pcap FILE|- needs
exactly one node and writes the capture here, not in the pod.

Plugin flags:
  --node NODE            a node to ask (repeat, or comma-separate); default every node
  -o, --output FORMAT    text or json (default text)
  --agent-selector SEL   labels of the agent pods (default ` + defaultSelector + `)
  --agent-container C    the agent's container (default ` + defaultContainer + `)
  --agent-binary PATH    nodegress inside it (default ` + defaultBinary + `)
  -n, --namespace NS     the agents' namespace (default ` + defaultNamespace + `)
  --kubeconfig, --context, --cluster, --user, --server, --token, ...
                         as for kubectl

The user needs "create" on pods/exec and "list" on pods in the agents'
namespace.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil))
}

// run executes one plugin command; connect is how it reaches the cluster
// (nil: from the kubeconfig flags).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, connect connectFunc) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var cmd func(context.Context, *options, []string, io.Writer, io.Writer) error
	switch args[0] {
	case "trace":
		cmd = runTrace
	case "explain":
		cmd = runExplain
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "kubectl nodegress: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	o := newOptions(connect)
	fs := o.flagSet(args[0])
	own, rest, err := splitArgs(fs, args[1:])
	if err == nil {
		err = fs.Parse(own)
	}
	if err == nil {
		err = o.validate()
	}
	if err != nil {
		fmt.Fprintf(stderr, "kubectl nodegress %s: %v\n", args[0], err)
		return 2
	}
	if err := cmd(ctx, o, rest, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "kubectl nodegress %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
