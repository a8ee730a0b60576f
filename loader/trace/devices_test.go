package trace

import (
	"errors"
	"testing"
	"time"
)

func TestDeviceNames(t *testing.T) {
	now := time.Unix(1000, 0)
	lookups := 0
	names := map[int]string{2: "eth0"}
	d := newDeviceNames()
	d.now = func() time.Time { return now }
	d.lookup = func(ifindex int) (string, error) {
		lookups++
		if n, ok := names[ifindex]; ok {
			return n, nil
		}
		return "", errors.New("no such device")
	}

	steps := []struct {
		ifindex     uint32
		advance     time.Duration
		rename      string
		want        string
		wantLookups int
	}{
		{ifindex: 2, want: "eth0", wantLookups: 1},
		{ifindex: 2, want: "eth0", wantLookups: 1},                     // cached
		{ifindex: 7, want: "if7", wantLookups: 2},                      // unknown: fallback
		{ifindex: 7, want: "if7", wantLookups: 2},                      // failures are cached too
		{ifindex: 0, want: "-", wantLookups: 2},                        // no device at all
		{ifindex: 2, rename: "wan0", want: "eth0", wantLookups: 2},     // stale within the TTL
		{ifindex: 2, advance: deviceTTL, want: "wan0", wantLookups: 3}, // refreshed after it
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if s.rename != "" {
			names[int(s.ifindex)] = s.rename
		}
		if got := d.name(s.ifindex); got != s.want || lookups != s.wantLookups {
			t.Errorf("step %d: got %q after %d lookups, want %q after %d", i, got, lookups, s.want, s.wantLookups)
		}
	}
}
