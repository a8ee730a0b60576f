package benchkit

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
)

// CPUStat is one CPU's time from /proc/stat, in clock ticks (ClockTick a
// second).
type CPUStat struct {
	// Busy is everything but idle and iowait.
	Busy uint64
	// Softirq is the time spent serving softirqs. On a kernel without
	// CONFIG_IRQ_TIME_ACCOUNTING it is sampled at every timer tick, so it
	// is exact only over many ticks; network receive processing (veth,
	// bridge, forwarding, netfilter, XDP in veth NAPI, TCP receive) runs
	// there.
	Softirq uint64
	Total   uint64
}

// Sub is s minus an earlier reading.
func (s CPUStat) Sub(earlier CPUStat) CPUStat {
	return CPUStat{Busy: s.Busy - earlier.Busy, Softirq: s.Softirq - earlier.Softirq, Total: s.Total - earlier.Total}
}

// ReadCPUStats reads the cpuN lines of /proc/stat, summed over cpus (all
// CPUs when none are given).
func ReadCPUStats(cpus ...int) (CPUStat, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return CPUStat{}, err
	}
	defer f.Close()
	return parseCPUStats(f, cpus)
}

func parseCPUStats(r io.Reader, cpus []int) (CPUStat, error) {
	want := map[string]bool{}
	for _, c := range cpus {
		want["cpu"+strconv.Itoa(c)] = true
	}
	var sum CPUStat
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || !strings.HasPrefix(fields[0], "cpu") || fields[0] == "cpu" {
			continue
		}
		if len(want) > 0 && !want[fields[0]] {
			continue
		}
		// user nice system idle iowait irq softirq steal ...
		for i, v := range fields[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return CPUStat{}, err
			}
			sum.Total += n
			if i != 3 && i != 4 {
				sum.Busy += n
			}
			if i == 6 {
				sum.Softirq += n
			}
		}
	}
	return sum, sc.Err()
}

// RSS is the resident set size of a process in bytes, from
// /proc/PID/status.
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, os.ErrNotExist
}
