package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Node Leases: every agent serving Ingresses keeps one Lease renewed in the
// election namespace, named after its node and owned by its Node object,
// so the elected status writer knows which nodes serve without reading
// Pods (see status_writer.go).

// nodeLeaseHolder returns the node a node Lease is held by and when it
// expires, if it is a node Lease and held; a released Lease has no holder.
func nodeLeaseHolder(l *coordinationv1.Lease) (string, time.Time, bool) {
	if !strings.HasPrefix(l.Name, NodeLeasePrefix) {
		return "", time.Time{}, false
	}
	s := l.Spec
	if s.HolderIdentity == nil || *s.HolderIdentity == "" || s.RenewTime == nil ||
		s.LeaseDurationSeconds == nil || *s.LeaseDurationSeconds <= 0 {
		return "", time.Time{}, false
	}
	return *s.HolderIdentity, s.RenewTime.Add(time.Duration(*s.LeaseDurationSeconds) * time.Second), true
}

// nodeLeaseName is the name of a node's Lease. Node names may be as long as
// a Lease name may be, so long ones are shortened with a hash; the holder
// identity, not the name, says which node a Lease is for.
func nodeLeaseName(node string) string {
	const maxName = 253
	name := NodeLeasePrefix + node
	if len(name) <= maxName {
		return name
	}
	sum := sha256.Sum256([]byte(node))
	suffix := "-" + hex.EncodeToString(sum[:8])
	return strings.TrimRight(name[:maxName-len(suffix)], ".-") + suffix
}

// nodeLease keeps this node's Lease renewed while the agent serves
// Ingresses, and clears its holder when the agent stops, so the status
// leader drops the node at once instead of after the Lease expires.
// It needs get, create and update on leases; never delete: the Lease is
// owned by the Node object, so the garbage collector removes it with the
// Node.
type nodeLease struct {
	client    kubernetes.Interface
	namespace string
	node      string
	name      string
	nodeUID   func() types.UID // "" while the Node is unknown
	timing    statusTiming
	log       *slog.Logger

	lease   *coordinationv1.Lease // last written, saves a get per renewal
	lastErr string
}

func newNodeLease(c *Controller, namespace string) *nodeLease {
	return &nodeLease{
		client:    c.client,
		namespace: namespace,
		node:      c.cfg.NodeName,
		name:      nodeLeaseName(c.cfg.NodeName),
		nodeUID: func() types.UID {
			if n, err := c.nodes.Get(c.cfg.NodeName); err == nil {
				return n.UID
			}
			return ""
		},
		timing: defaultStatusTiming,
		log:    c.log.With("component", "node-lease"),
	}
}

// run renews the Lease until ctx is done, retrying failures with backoff
// (up to the renewal interval), then releases it.
func (h *nodeLease) run(ctx context.Context) {
	var backoff time.Duration
	for {
		wait := h.timing.nodeLeaseRenew
		if err := h.renew(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			backoff = min(max(2*backoff, time.Second), h.timing.nodeLeaseRenew)
			wait = backoff
			if msg := err.Error(); msg != h.lastErr {
				h.lastErr = msg
				h.log.Warn("renew node lease; retrying", "lease", h.namespace+"/"+h.name, "err", err, "retry_in", wait)
			}
		} else {
			backoff = 0
			if h.lastErr != "" {
				h.lastErr = ""
				h.log.Info("node lease renewed", "lease", h.namespace+"/"+h.name)
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
		case <-timer.C:
			continue
		}
		break
	}
	h.release()
}

func (h *nodeLease) renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.timing.apiTimeout)
	defer cancel()
	api := h.client.CoordinationV1().Leases(h.namespace)
	now := metav1.NewMicroTime(time.Now())
	dur := int32(h.timing.nodeLeaseDuration / time.Second)
	if h.lease == nil {
		l, err := api.Get(ctx, h.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: h.name, Namespace: h.namespace, OwnerReferences: h.owner()},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity:       &h.node,
					LeaseDurationSeconds: &dur,
					AcquireTime:          &now,
					RenewTime:            &now,
				},
			}
			created, err := api.Create(ctx, l, metav1.CreateOptions{FieldManager: statusFieldManager})
			if err != nil {
				return fmt.Errorf("create lease: %w", err)
			}
			h.lease = created
			return nil
		}
		if err != nil {
			return fmt.Errorf("get lease: %w", err)
		}
		h.lease = l
	}
	l := h.lease.DeepCopy()
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != h.node {
		l.Spec.AcquireTime = &now
	}
	l.Spec.HolderIdentity = &h.node
	l.Spec.LeaseDurationSeconds = &dur
	l.Spec.RenewTime = &now
	if len(l.OwnerReferences) == 0 {
		l.OwnerReferences = h.owner()
	}
	updated, err := api.Update(ctx, l, metav1.UpdateOptions{FieldManager: statusFieldManager})
	if err != nil {
		// Start from a fresh copy next time (conflict, deleted Lease).
		h.lease = nil
		return fmt.Errorf("update lease: %w", err)
	}
	h.lease = updated
	return nil
}

// owner makes the Node own its Lease. blockOwnerDeletion stays unset: it
// would need delete permission on nodes.
func (h *nodeLease) owner() []metav1.OwnerReference {
	uid := h.nodeUID()
	if uid == "" {
		return nil
	}
	return []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: h.node, UID: uid}}
}

// release clears the holder, within a short timeout: the agent is
// stopping and the Lease expires anyway.
func (h *nodeLease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), h.timing.apiTimeout)
	defer cancel()
	api := h.client.CoordinationV1().Leases(h.namespace)
	key := h.namespace + "/" + h.name
	for attempt := 0; attempt < 2; attempt++ {
		l := h.lease
		h.lease = nil
		if l == nil {
			var err error
			if l, err = api.Get(ctx, h.name, metav1.GetOptions{}); err != nil {
				if !apierrors.IsNotFound(err) {
					h.log.Warn("release node lease", "lease", key, "err", err)
				}
				return
			}
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != h.node {
			return
		}
		l = l.DeepCopy()
		l.Spec.HolderIdentity = nil
		_, err := api.Update(ctx, l, metav1.UpdateOptions{FieldManager: statusFieldManager})
		if err == nil {
			h.log.Debug("node lease released", "lease", key)
			return
		}
		if !apierrors.IsConflict(err) {
			h.log.Warn("release node lease", "lease", key, "err", err)
			return
		}
	}
}
