package controller

import (
	"net/netip"
	"strings"
)

// EndpointOwner names the pod ("namespace/name") and the node behind
// address addr among the EndpointSlices of the Service the datapath
// service name svc ("namespace/name:port/PROTO") comes from, as the
// slices say (targetRef and nodeName). Both are empty when no slice lists
// the address, or before the first sync.
func (c *Controller) EndpointOwner(svc string, addr netip.Addr) (pod, node string) {
	select {
	case <-c.synced: // the informers' listers are set, and safe to share
	default:
		return "", ""
	}
	key, _, _ := strings.Cut(svc, ":")
	_, epSlices := c.lookup(key)
	want := addr.String()
	for _, s := range epSlices {
		for _, ep := range s.Endpoints {
			for _, a := range ep.Addresses {
				if a != want {
					continue
				}
				if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
					pod = ep.TargetRef.Namespace + "/" + ep.TargetRef.Name
					if ep.TargetRef.Namespace == "" {
						pod = s.Namespace + "/" + ep.TargetRef.Name
					}
				}
				if ep.NodeName != nil {
					node = *ep.NodeName
				}
				return pod, node
			}
		}
	}
	return "", ""
}
