package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// runTrace runs `nodegress trace` in the agents and merges their streams.
func runTrace(ctx context.Context, o *options, rest []string, stdout, stderr io.Writer) error {
	client, ex, err := o.connect(o)
	if err != nil {
		return err
	}
	agents, missing, err := findAgents(ctx, client, o.namespace(), o.selector, o.container, splitNodes(o.nodes))
	if err != nil {
		return err
	}
	for _, m := range missing {
		fmt.Fprintf(stderr, "kubectl nodegress: %v\n", m)
	}
	if len(agents) == 0 {
		return errors.New("no agent to trace")
	}
	if o.pcap != "" && len(agents) != 1 {
		return fmt.Errorf("--pcap writes one node's capture; name one --node of %d", len(agents))
	}
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	f := &fanOut{exec: ex, out: stdout, errOut: stderr, json: o.output == "json", grace: stopGrace}
	cmd := traceCommand(o, rest)
	if o.pcap != "" {
		return capture(ctx, f, agents[0], cmd, o.pcap)
	}
	failed, err := f.run(ctx, agents, cmd)
	if err != nil {
		return err
	}
	if n := failed + len(missing); n > 0 {
		return fmt.Errorf("%d of %d nodes could not be traced", n, len(agents)+len(missing))
	}
	return nil
}

// traceCommand is what runs in an agent's container: the plugin's output
// format (JSON to merge, or the capture on standard output), its duration,
// and every other flag as the user gave it.
func traceCommand(o *options, rest []string) []string {
	cmd := []string{o.binary, "trace", "--stop-on-stdin-eof"}
	if o.pcap != "" {
		cmd = append(cmd, "--pcap", "-")
	} else {
		cmd = append(cmd, "--output", o.output)
	}
	if o.duration > 0 {
		cmd = append(cmd, "--duration", o.duration.String())
	}
	return append(cmd, rest...)
}

// capture writes one agent's capture, as it arrives, to path here (- for
// standard output): inside the pod a file would be out of reach.
func capture(ctx context.Context, f *fanOut, a agent, cmd []string, path string) (err error) {
	out := f.out
	if path != "-" {
		// Packets may carry what the node's clients sent: the file is
		// the user's alone, as nodegress trace --pcap makes it.
		file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("create capture file: %w", err)
		}
		defer func() {
			if cerr := file.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("write capture file: %w", cerr)
			}
		}()
		out = file
	}
	f.passStderr = f.errOut
	if err := f.execOne(ctx, a, cmd, out); err != nil {
		return fmt.Errorf("node %s: %w", a.Node, err)
	}
	return nil
}

// runExplain runs `nodegress explain` in one node's agent.
func runExplain(ctx context.Context, o *options, rest []string, stdout, stderr io.Writer) error {
	nodes := splitNodes(o.nodes)
	if len(nodes) != 1 {
		return errors.New("explain asks one node's agent: name it with --node")
	}
	client, ex, err := o.connect(o)
	if err != nil {
		return err
	}
	agents, missing, err := findAgents(ctx, client, o.namespace(), o.selector, o.container, nodes)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return missing[0]
	}
	f := &fanOut{exec: ex, out: stdout, errOut: stderr, grace: stopGrace}
	cmd := append([]string{o.binary, "explain"}, rest...)
	if err := f.execOne(ctx, agents[0], cmd, stdout); err != nil {
		return fmt.Errorf("node %s: %w", agents[0].Node, err)
	}
	return nil
}
