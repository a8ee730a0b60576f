// Command clusterkit holds the parts of scripts/cluster.sh that are easier
// in Go than in a shell: the cluster's certificates and kubeconfigs, OCI
// images written without a container engine, and the XDP stubs on the
// switch side of the nodes' links.
//
//	clusterkit pki --dir DIR --ips IP,... --server URL --admin-server URL --nodes N,...
//	clusterkit image --out FILE --tag NAME:TAG [--entrypoint JSON] [--cmd JSON] SPEC...
//	clusterkit xdp-pass DEV
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/nodegress/nodegress/tests/internal/xdpstub"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "clusterkit:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: clusterkit pki|image|xdp-pass ...")
	}
	switch args[0] {
	case "pki":
		return pkiCmd(args[1:])
	case "image":
		return imageCmd(args[1:])
	case "xdp-pass":
		if len(args) != 2 {
			return errors.New("usage: clusterkit xdp-pass DEV")
		}
		// Attached through netlink, so it outlives this process and goes
		// away with the device.
		return xdpstub.AttachPersistent(args[1])
	}
	return fmt.Errorf("unknown command %q", args[0])
}
