// Command democp runs the demo's Kubernetes control plane: etcd and
// kube-apiserver from the binaries scripts/kube-bins.sh cached, with fresh
// certificates, optionally inside a network namespace. Once the API server
// is ready it prints one line,
//
//	ready URL ADMIN-KUBECONFIG CA-FILE
//
// and keeps running until SIGINT or SIGTERM, then stops both processes.
// Everything lives in --dir (certificates, kubeconfig, etcd's data, logs).
//
// Usage: democp --dir DIR [--netns NAME] [--listen IP]
//
//	democp --check   prints the binaries' directory, or fails when they are
//	                 not built (run `make kube-bins`)
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/nodegress/nodegress/tests/kube/cp"
	"github.com/nodegress/nodegress/tests/netns"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		dir    = flag.String("dir", "", "directory for certificates, kubeconfig, etcd's data and logs (created if missing)")
		ns     = flag.String("netns", "", "named network namespace (ip netns) to run etcd and kube-apiserver in")
		listen = flag.String("listen", "127.0.0.1", "address the API server binds and advertises; it must be an address of --netns")
		check  = flag.Bool("check", false, "print the binaries' directory and exit; fail when they are not built")
	)
	flag.Parse()
	bins, err := cp.FindBins(false)
	if *check {
		if err != nil {
			fmt.Fprintln(os.Stderr, "democp:", err)
			return 1
		}
		fmt.Println(bins)
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "democp:", err)
		return 1
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "democp: --dir is required")
		return 2
	}
	addr, err := netip.ParseAddr(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "democp: --listen:", err)
		return 2
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "democp:", err)
		return 1
	}
	opts := []cp.Option{cp.ListenOn(addr),
		// Ends the agents' watches itself on SIGTERM rather than waiting
		// for them, so the demo's cleanup is quick.
		cp.WithAPIServerArgs("--shutdown-watch-termination-grace-period=2s")}
	if *ns != "" {
		opts = append(opts, cp.InNetns(&netns.NS{Name: *ns}))
	}

	// Stop on a signal even while starting: the caller may give up.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	type result struct {
		c   *cp.ControlPlane
		err error
	}
	started := make(chan result, 1)
	go func() {
		c, err := cp.Start(bins, *dir, opts...)
		started <- result{c, err}
	}()
	var c *cp.ControlPlane
	select {
	case r := <-started:
		if r.err != nil {
			fmt.Fprintln(os.Stderr, "democp:", r.err)
			return 1
		}
		c = r.c
	case <-sig:
		// cp.Start stops what it started when it fails; its children also
		// die with this process (they run with a parent-death signal).
		return 1
	}
	fmt.Printf("ready %s %s %s\n", c.URL, c.Kubeconfig, filepath.Join(*dir, "ca.crt"))

	<-sig
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "democp:", err)
		return 1
	}
	return 0
}
