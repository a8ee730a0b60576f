package harness

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// MapsOutput is what `nodegress maps` printed, parsed: which backends each
// frontend of the datapath selects from.
type MapsOutput struct {
	// Frontends maps "ADDR:PORT/PROTO" (10.100.0.1:30080/TCP), with
	// "/socket" appended for the socket load balancer's, to the addresses
	// ("ADDR:PORT") of its active backends, in slot order.
	Frontends map[string][]string
	// L7 holds the frontends steered to the proxy (KIND L7).
	L7 map[string]bool
}

// Backends returns the backend addresses of frontend "ADDR:PORT/PROTO" and
// whether the datapath has that frontend at all.
func (m *MapsOutput) Backends(frontend string) ([]string, bool) {
	b, ok := m.Frontends[frontend]
	return b, ok
}

// ParseMaps parses the two tables at the top of `nodegress maps`: the
// frontends with their backend ids, then the backends by id.
func ParseMaps(out string) (*MapsOutput, error) {
	type frontend struct {
		key string
		ids []uint64
	}
	var fronts []frontend
	l7 := map[string]bool{}
	addrs := map[uint64]string{}
	table := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			table = ""
			continue
		case strings.HasPrefix(line, "FRONTEND"):
			table = "frontends"
			continue
		case strings.HasPrefix(line, "BACKEND ID"):
			table = "backends"
			continue
		}
		switch table {
		case "frontends":
			// 10.100.0.1:30080  TCP  3  [1 2]  L4
			open, close := strings.Index(line, "["), strings.LastIndex(line, "]")
			if open < 0 || close < open {
				return nil, fmt.Errorf("maps: frontend line %q has no backend list", line)
			}
			head, kind := strings.Fields(line[:open]), strings.TrimSpace(line[close+1:])
			if len(head) != 3 {
				return nil, fmt.Errorf("maps: malformed frontend line %q", line)
			}
			f := frontend{key: head[0] + "/" + head[1]}
			if kind == "socket" {
				f.key += "/socket"
			}
			for _, id := range strings.Fields(line[open+1 : close]) {
				n, err := strconv.ParseUint(id, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("maps: frontend line %q: %w", line, err)
				}
				f.ids = append(f.ids, n)
			}
			fronts = append(fronts, f)
			if kind == "L7" {
				l7[f.key] = true
			}
		case "backends":
			// 1  10.244.1.10:8080  true  false
			fs := strings.Fields(line)
			if len(fs) < 2 {
				return nil, fmt.Errorf("maps: malformed backend line %q", line)
			}
			id, err := strconv.ParseUint(fs[0], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("maps: backend line %q: %w", line, err)
			}
			addrs[id] = fs[1]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	m := &MapsOutput{Frontends: map[string][]string{}, L7: l7}
	for _, f := range fronts {
		bs := []string{}
		for _, id := range f.ids {
			a, ok := addrs[id]
			if !ok {
				return nil, fmt.Errorf("maps: frontend %s selects backend %d, which is not in the backend table", f.key, id)
			}
			bs = append(bs, a)
		}
		m.Frontends[f.key] = bs
	}
	return m, nil
}

// ParsedMaps runs `nodegress maps` on the agent's node and parses it.
func (a *Agent) ParsedMaps() (*MapsOutput, error) {
	out, err := a.Maps()
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out)
	}
	return ParseMaps(out)
}

// Counted returns how many packets the agent's datapath counted under
// reason (its name, as `nodegress maps` prints it).
func (a *Agent) Counted(reason string) (uint64, error) {
	out, err := a.Maps()
	if err != nil {
		return 0, fmt.Errorf("%w\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == reason {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, nil
}
