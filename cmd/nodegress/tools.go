package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"syscall"
	"text/tabwriter"

	"github.com/nodegress/nodegress/loader"
	"github.com/nodegress/nodegress/loader/trace"
)

func runTrace(args []string) int {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	socket := fs.String("socket", DefaultTraceSocket, "the agent's trace socket")
	format := trace.Format("text")
	fs.Var(&format, "output", "text or json")
	pcap := fs.String("pcap", "", "write the matching packets as pcapng to `FILE` (- for stdout, e.g. to pipe into tcpdump -r -), each with its decision as comment")
	snaplen := fs.Int("snaplen", trace.DefaultSnaplen, "with --pcap, keep the first `N` bytes of each packet (the datapath copies at most "+strconv.Itoa(loader.MaxSnaplen)+")")
	var filter trace.Filter
	filter.RegisterFlags(fs)
	stdinEOF := fs.Bool("stop-on-stdin-eof", false, "also stop when standard input ends (kubectl nodegress ends the traces it runs in agent pods this way)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *stdinEOF {
		var cancel context.CancelFunc
		ctx, cancel = cancelOnEOF(ctx, os.Stdin)
		defer cancel()
	}
	var err error
	if *pcap != "" {
		err = runTracePcap(ctx, fs, *socket, filter, *pcap, *snaplen)
	} else {
		err = trace.Run(ctx, *socket, filter, os.Stdout, format)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodegress trace:", err)
		return 1
	}
	return 0
}

// runTracePcap is `nodegress trace --pcap`: packets to path (or stdout),
// status lines to stderr.
func runTracePcap(ctx context.Context, fs *flag.FlagSet, socket string, filter trace.Filter, path string, snaplen int) error {
	if flagSet(fs, "output") {
		return errors.New("--output and --pcap exclude each other")
	}
	if snaplen <= 0 {
		return fmt.Errorf("--snaplen %d: must be positive", snaplen)
	}
	filter.Snaplen = snaplen
	out := os.Stdout
	if path != "-" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("open pcap file: %w", err)
		}
		defer f.Close()
		out = f
	}
	if err := trace.RunPcap(ctx, socket, filter, out, os.Stderr); err != nil {
		return err
	}
	if path != "-" {
		if err := out.Close(); err != nil {
			return fmt.Errorf("write pcap file: %w", err)
		}
	}
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func runCleanup(args []string) int {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	bpffs := fs.String("bpffs", loader.DefaultBPFFS, "directory the agent pinned its datapath in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := loader.Cleanup(*bpffs); err != nil {
		fmt.Fprintln(os.Stderr, "nodegress cleanup:", err)
		return 1
	}
	fmt.Println("removed the datapath pinned under", *bpffs)
	return 0
}

func runMaps(args []string) int {
	fs := flag.NewFlagSet("maps", flag.ContinueOnError)
	bpffs := fs.String("bpffs", loader.DefaultBPFFS, "directory the agent pinned its datapath in")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s, err := loader.ReadPinned(*bpffs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nodegress maps:", err)
		return 1
	}
	printSnapshot(s)
	return 0
}

func printSnapshot(s *loader.Snapshot) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "FRONTEND\tPROTO\tSERVICE ID\tBACKENDS\tKIND\n")
	for _, f := range s.Frontends {
		kind := "L4"
		switch {
		case f.L7:
			kind = "L7"
		case f.Internal:
			kind = "socket" // in-cluster clients' connect/sendmsg
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%v\t%s\n", f.Frontend, f.Proto, f.ServiceID, s.Slots[f.ServiceID], kind)
	}
	w.Flush()
	fmt.Println()
	fmt.Fprintf(w, "BACKEND ID\tADDRESS\tLOCAL\tTERMINATING\n")
	for _, b := range s.Backends {
		fmt.Fprintf(w, "%d\t%s\t%t\t%t\n", b.ID, b.Backend, b.Local, b.Terminating)
	}
	w.Flush()
	fmt.Println()
	fmt.Fprintf(w, "DEVICE\tSNAT ADDRESS\tCHECKSUMS\n")
	for _, idx := range slices.Sorted(maps.Keys(s.Devices)) {
		d := s.Devices[idx]
		name := strconv.Itoa(int(idx))
		if iface, err := net.InterfaceByIndex(int(idx)); err == nil {
			name = iface.Name
		}
		csum := "trusted: XDP, where attached, translates every frame"
		if d.PartialChecksums {
			csum = "may be partial (virtual device or generic XDP): XDP, where attached, leaves unverified frames to tc"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", name, d.SNATAddr, csum)
	}
	w.Flush()
	fmt.Printf("\nconntrack entries: %d   reverse nat entries: %d   snat ports: %d-%d   tracing: %t\n\n",
		s.Conntrack, s.ReverseNAT, s.SNATPortMin, s.SNATPortMax, s.Tracing)
	reasons := make([]loader.Reason, 0, len(s.Stats))
	for r, c := range s.Stats {
		if c.Packets > 0 {
			reasons = append(reasons, r)
		}
	}
	sort.Slice(reasons, func(i, j int) bool { return reasons[i] < reasons[j] })
	fmt.Fprintf(w, "REASON\tPACKETS\tBYTES\n")
	for _, r := range reasons {
		fmt.Fprintf(w, "%s\t%d\t%d\n", r, s.Stats[r].Packets, s.Stats[r].Bytes)
	}
	w.Flush()
}
