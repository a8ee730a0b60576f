package trace

import (
	"net"
	"strconv"
	"sync"
	"time"
)

// deviceTTL bounds how long a cached interface name is trusted: names change
// rarely (rename, or an ifindex reused after a veth is recreated), but
// resolving one costs a netlink dump of every link, far too much per event.
const deviceTTL = 30 * time.Second

// deviceNames resolves ifindexes to interface names with a cache.
type deviceNames struct {
	lookup func(ifindex int) (string, error)
	now    func() time.Time

	mu    sync.Mutex
	cache map[uint32]deviceEntry
}

type deviceEntry struct {
	name    string
	expires time.Time
}

func newDeviceNames() *deviceNames {
	return &deviceNames{
		lookup: func(ifindex int) (string, error) {
			ifi, err := net.InterfaceByIndex(ifindex)
			if err != nil {
				return "", err
			}
			return ifi.Name, nil
		},
		now:   time.Now,
		cache: make(map[uint32]deviceEntry),
	}
}

// name returns the interface name of ifindex, or "if<N>" when it cannot be
// resolved (the interface is gone, or lives in another network namespace).
// Failures are cached too so a vanished device costs one lookup per TTL.
func (d *deviceNames) name(ifindex uint32) string {
	if ifindex == 0 {
		return "-"
	}
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.cache[ifindex]; ok && now.Before(e.expires) {
		return e.name
	}
	name, err := d.lookup(int(ifindex))
	if err != nil || name == "" {
		name = "if" + strconv.FormatUint(uint64(ifindex), 10)
	}
	// Cap the cache: ifindexes only grow on a node that churns veths.
	if len(d.cache) >= 4096 {
		clear(d.cache)
	}
	d.cache[ifindex] = deviceEntry{name: name, expires: now.Add(deviceTTL)}
	return name
}
