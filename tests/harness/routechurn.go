package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	gwapi "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/nodegress/nodegress/tests/netns"
)

// RouteChurn changes a Gateway's HTTPRoutes and the endpoints behind them
// through the API server while a RouteLoad runs on the routes, one phase
// per kind of change, each ending once the change is seen through the
// proxy:
//
//   - steady: no change (the reference);
//   - add-routes: Added more HTTPRoutes created, until each answers 200;
//   - change-routes: every loaded route's backendRefs moved from From to
//     To, until the latest answer of every host comes from a pod of To;
//   - remove-routes: the added routes deleted, until each answers 404;
//   - add-endpoints: Spare added to To's EndpointSlice, until each spare
//     pod has answered;
//   - remove-endpoints: To's own endpoints removed from the slice (only
//     Spare left), until MinOK answers in a row came from none of them.
//
// The pods removed from the slice keep running, as a terminating pod
// does while its endpoint goes away.
type RouteChurn struct {
	GW   gwclient.Interface
	Core kubernetes.Interface
	// Namespace and Gateway hold the routes; added routes attach to
	// Gateway's listeners as HTTPRouteObject does.
	Namespace, Gateway string
	// Routes are the HTTPRoutes under load, created and served before
	// Run: each has one hostname and forwards to From.
	Routes []*gwapi.HTTPRoute
	// From and To are Services (with their EndpointSlices) already in the
	// API server; To's slice is rewritten with Spare.
	From, To Service
	Spare    []*netns.Pod
	// Added routes are created and deleted again.
	Added int
	// Client and Addr: where the load and the polls come from and go to
	// (the Gateway's address and port).
	Client *netns.NS
	Addr   netip.AddrPort
	// KeepAlive and NewConn workers (see RouteLoad).
	KeepAlive, NewConn int
	// MinOK is the least number of 2xx answers every phase must count
	// (it runs on until then).
	MinOK int
	// PhaseTimeout bounds each phase.
	PhaseTimeout time.Duration
	// Parallel bounds the API writes in flight.
	Parallel int
	// Logf, when set, is told each phase's outcome.
	Logf func(format string, args ...any)
}

// ChurnPhase is one phase of a RouteChurn.
type ChurnPhase struct {
	PhaseCounts
	// Writes are the API writes of the phase and Wrote the time they
	// took; Seen is the time from the first write to the change seen
	// through the proxy everywhere the phase looks (0 in steady).
	Writes      int
	Wrote, Seen time.Duration
}

// Run runs the phases and returns their counts, with an error when a
// change was not seen through the proxy within PhaseTimeout (the counts so
// far are returned too).
func (c RouteChurn) Run(ctx context.Context) ([]ChurnPhase, error) {
	var hosts []string
	for _, r := range c.Routes {
		hosts = append(hosts, string(r.Spec.Hostnames[0]))
	}
	load := StartRouteLoad(ctx, c.Client, c.Addr, hosts, RouteLoadConfig{KeepAlive: c.KeepAlive, NewConn: c.NewConn, Phase: "steady"})
	poll := NewL7Client(c.Client, c.Addr.Addr(), L7Options{})
	defer poll.CloseIdle()
	var added []*gwapi.HTTPRoute
	for i := range c.Added {
		name := fmt.Sprintf("churn-%d", i)
		added = append(added, HTTPRouteObject(c.Namespace, name, c.Gateway, name+".churn.test", c.From.Name, int32(c.From.Ports[0].Port)))
	}
	toPods := podNames(c.To.Endpoints)
	spare := Endpoints(c.Spare...)

	type phase struct {
		name  string
		write func(ctx context.Context) (int, error)
		seen  func(ctx context.Context) error
	}
	phases := []phase{
		{name: "steady"},
		{name: "add-routes",
			write: func(ctx context.Context) (int, error) {
				return len(added), CreateHTTPRoutes(ctx, c.GW, added, c.Parallel)
			},
			seen: func(ctx context.Context) error { return RouteAnswers(ctx, poll, added, 200) },
		},
		{name: "change-routes",
			write: func(ctx context.Context) (int, error) {
				return len(c.Routes), forEach(ctx, len(c.Routes), c.Parallel, func(ctx context.Context, i int) error {
					return setBackend(ctx, c.GW, c.Routes[i], c.To)
				})
			},
			seen: func(context.Context) error {
				for _, h := range hosts {
					if pod := load.LastPod(h); !slices.Contains(toPods, pod) {
						return fmt.Errorf("%s last answered by %q, want one of %v", h, pod, toPods)
					}
				}
				return nil
			},
		},
		{name: "remove-routes",
			write: func(ctx context.Context) (int, error) {
				return len(added), forEach(ctx, len(added), c.Parallel, func(ctx context.Context, i int) error {
					return c.GW.GatewayV1().HTTPRoutes(c.Namespace).Delete(ctx, added[i].Name, metav1.DeleteOptions{})
				})
			},
			seen: func(ctx context.Context) error { return RouteAnswers(ctx, poll, added, 404) },
		},
		{name: "add-endpoints",
			write: func(ctx context.Context) (int, error) {
				s := c.To
				s.Endpoints = append(slices.Clone(c.To.Endpoints), spare...)
				return 1, c.applySlice(ctx, s)
			},
			seen: func(context.Context) error {
				cur := load.Current()
				for _, p := range c.Spare {
					if cur.Pods[p.Name] == 0 {
						return fmt.Errorf("no answer from the added endpoint %s yet", p.Name)
					}
				}
				return nil
			},
		},
		{name: "remove-endpoints",
			write: func(ctx context.Context) (int, error) {
				s := c.To
				s.Endpoints = spare
				return 1, c.applySlice(ctx, s)
			},
			seen: func(context.Context) error {
				for _, pod := range toPods {
					if n := load.AnswersWithout(pod); n < int64(c.MinOK) {
						return fmt.Errorf("%d answers since the removed endpoint %s last answered", n, pod)
					}
				}
				return nil
			},
		},
	}

	var out []ChurnPhase
	var failure error
	for _, ph := range phases {
		if ph.name != "steady" {
			load.Phase(ph.name)
		}
		res := ChurnPhase{}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, c.PhaseTimeout)
		err := func() error {
			if ph.write != nil {
				n, err := ph.write(pctx)
				res.Writes, res.Wrote = n, time.Since(start)
				if err != nil {
					return fmt.Errorf("%s: %w", ph.name, err)
				}
				if err := until(pctx, 10*time.Millisecond, ph.seen); err != nil {
					return fmt.Errorf("%s: not seen through the proxy: %w", ph.name, err)
				}
				res.Seen = time.Since(start)
			}
			return until(pctx, 10*time.Millisecond, func(context.Context) error {
				if n := load.Current().OK; n < c.MinOK {
					return fmt.Errorf("%d 2xx answers, want %d", n, c.MinOK)
				}
				return nil
			})
		}()
		cancel()
		// A phase that did not finish still counts.
		out = append(out, res)
		if err != nil {
			failure = err
			break
		}
	}
	for i, counts := range load.Stop() {
		out[i].PhaseCounts = counts
	}
	if c.Logf != nil {
		for _, p := range out {
			c.Logf("%s; %d writes seen after %s", p.PhaseCounts, p.Writes, p.Seen.Round(time.Millisecond))
		}
	}
	return out, failure
}

func (c RouteChurn) applySlice(ctx context.Context, s Service) error {
	_, es, err := s.Objects()
	if err != nil {
		return err
	}
	return Apply(ctx, c.Core, es)
}

// setBackend points every rule of route at s's first port.
func setBackend(ctx context.Context, gw gwclient.Interface, route *gwapi.HTTPRoute, s Service) error {
	api := gw.GatewayV1().HTTPRoutes(route.Namespace)
	// The elected agent writes the route's status meanwhile: retry on
	// conflicts.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		r, err := api.Get(ctx, route.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for i := range r.Spec.Rules {
			r.Spec.Rules[i].BackendRefs = []gwapi.HTTPBackendRef{BackendRef(s.Name, int32(s.Ports[0].Port))}
		}
		_, err = api.Update(ctx, r, metav1.UpdateOptions{})
		return err
	})
}

// RouteAnswers polls GET / for every route's first hostname through cl
// until each has answered code once, or ctx ends.
func RouteAnswers(ctx context.Context, cl *L7Client, routes []*gwapi.HTTPRoute, code int) error {
	left := slices.Clone(routes)
	return until(ctx, 10*time.Millisecond, func(ctx context.Context) error {
		var still []*gwapi.HTTPRoute
		var last string
		for _, r := range left {
			host := string(r.Spec.Hostnames[0])
			resp, err := cl.Get(ctx, "http://"+host+"/")
			switch {
			case err != nil:
				still, last = append(still, r), fmt.Sprintf("%s: %v", host, err)
			case resp.StatusCode != code:
				still, last = append(still, r), fmt.Sprintf("%s: %d", host, resp.StatusCode)
			}
		}
		left = still
		if len(left) > 0 {
			return fmt.Errorf("%d routes not answering %d yet (%s)", len(left), code, last)
		}
		return nil
	})
}

// until calls fn every interval until it returns nil or ctx ends, then
// returns fn's last error.
func until(ctx context.Context, interval time.Duration, fn func(ctx context.Context) error) error {
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(interval):
		}
	}
}

func podNames(eps []Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Pod.Name)
	}
	return out
}
