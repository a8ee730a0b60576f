package explain

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// maxAnswer bounds an answer line (a service with thousands of backends).
const maxAnswer = 64 << 20

// Ask sends q to the agent's socket and returns its answer; an answer
// with Error set is returned as an error.
func Ask(ctx context.Context, socketPath string, q Query) (Answer, error) {
	q.Version = Version
	if err := q.Validate(); err != nil {
		return Answer{}, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Answer{}, fmt.Errorf("no agent answers on %s (is `nodegress agent` running, with this --explain-socket?): %w", socketPath, err)
		}
		return Answer{}, fmt.Errorf("connect to %s: %w", socketPath, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(2 * requestTimeout))
	b, _ := json.Marshal(q) // strings, an address and a bool
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return Answer{}, fmt.Errorf("send request: %w", err)
	}
	line, err := readLine(bufio.NewReader(conn), maxAnswer)
	if err != nil {
		return Answer{}, fmt.Errorf("read answer: %w", err)
	}
	var a Answer
	if err := json.Unmarshal(line, &a); err != nil {
		return Answer{}, fmt.Errorf("decode answer: %w", err)
	}
	if a.Version != Version {
		return a, fmt.Errorf("agent answered in protocol version %d, want %d", a.Version, Version)
	}
	if a.Error != "" {
		return a, errors.New(a.Error)
	}
	return a, nil
}

// WriteText prints a for people.
func WriteText(w io.Writer, a Answer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%s from %s\n", a.Target, a.From)
	for _, f := range a.Frontends {
		fmt.Fprintf(bw, "\nfrontend %s/%s  service %s (id %d)  kind %s\n", f.Frontend, f.Proto, f.Service, f.ServiceID, f.Kind)
		if f.Forwarding != "" {
			fmt.Fprintf(bw, "  forwarding %s, selection %s, without backends: %s", f.Forwarding, f.Selection, f.NoBackend)
			if f.Affinity != "" {
				fmt.Fprintf(bw, ", affinity %s", f.Affinity)
			}
			if f.Restricted {
				fmt.Fprintf(bw, ", source ranges %s", strings.Join(f.SourceRanges, " "))
			}
			fmt.Fprintln(bw)
		}
		if len(f.Backends) > 0 {
			tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "  BACKEND\tID\tSTATE\tWHERE\tPOD\tNODE\n")
			for _, b := range f.Backends {
				where := "remote"
				if b.Local {
					where = "local"
				}
				fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\n", b.Address, b.ID, b.State, where, orDash(b.Pod), orDash(b.Node))
			}
			tw.Flush()
		}
		for _, d := range f.Drift {
			fmt.Fprintf(bw, "  drift: %s\n", d)
		}
		fmt.Fprintf(bw, "  verdict: %s (%s%s)\n    %s\n", f.Verdict.Action, f.Verdict.Reason, counted(f.Verdict.Counted), f.Verdict.Text)
	}
	if r := a.Route; r != nil {
		fmt.Fprintf(bw, "\nroute")
		if r.Source != "" {
			fmt.Fprintf(bw, " %s", r.Source)
		}
		if r.Listener != "" {
			fmt.Fprintf(bw, " on listener %s", r.Listener)
		}
		if r.Match != "" {
			fmt.Fprintf(bw, " match %s", r.Match)
		}
		fmt.Fprintln(bw)
		for _, b := range r.Backends {
			state := strings.Join(b.Endpoints, " ")
			if b.Missing {
				state = "(not in the proxy's configuration)"
			} else if state == "" {
				state = "(no endpoints)"
			}
			weight := ""
			if b.Weight != 0 {
				weight = fmt.Sprintf(" weight %d", b.Weight)
			}
			fmt.Fprintf(bw, "  backend %s%s: %s\n", b.Upstream, weight, state)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(bw, "  note: %s\n", n)
		}
		fmt.Fprintf(bw, "  verdict: %s\n", routeVerdict(r))
	}
	return bw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func counted(n *uint64) string {
	if n == nil {
		return ""
	}
	return fmt.Sprintf(", counted %d so far", *n)
}

func routeVerdict(r *RouteAnswer) string {
	s := r.Reason
	if r.Status != 0 {
		s = fmt.Sprintf("%d %s", r.Status, r.Reason)
	}
	if r.Location != "" {
		s += " to " + r.Location
	}
	return s
}
