package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nodegress/nodegress/loader"
)

// datapathCollector exposes the datapath's per-CPU counters by reason and
// how full its maps are, read at scrape time.
type datapathCollector struct {
	dp       *loader.Datapath
	log      *slog.Logger
	packets  *prometheus.Desc
	bytes    *prometheus.Desc
	entries  *prometheus.Desc
	capacity *prometheus.Desc
	// traceLost counts trace events the ring buffer had no room for.
	traceLost *prometheus.Desc
}

func newDatapathCollector(dp *loader.Datapath, log *slog.Logger) *datapathCollector {
	return &datapathCollector{
		dp:       dp,
		log:      log,
		packets:  prometheus.NewDesc("nodegress_datapath_packets_total", "Packets by datapath decision reason.", []string{"reason", "verdict"}, nil),
		bytes:    prometheus.NewDesc("nodegress_datapath_bytes_total", "Bytes by datapath decision reason.", []string{"reason", "verdict"}, nil),
		entries:  prometheus.NewDesc("nodegress_map_entries", "Entries in a datapath map.", []string{"map"}, nil),
		capacity: prometheus.NewDesc("nodegress_map_capacity", "Capacity of a datapath map.", []string{"map"}, nil),
		traceLost: prometheus.NewDesc("nodegress_trace_events_lost_total",
			"Trace events (with packet bytes under nodegress trace --pcap) the datapath's ring buffer had no room for.", nil, nil),
	}
}

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.entries
	ch <- c.capacity
	ch <- c.traceLost
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.dp.Stats()
	if err != nil {
		c.log.Warn("read datapath counters", "err", err)
	}
	for r, n := range stats {
		verdict := "pass"
		if r.IsDrop() {
			verdict = "drop"
		}
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(n.Packets), r.String(), verdict)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(n.Bytes), r.String(), verdict)
	}
	usage, err := c.dp.MapUsage()
	if err != nil {
		c.log.Warn("read datapath map usage", "err", err)
	}
	for _, u := range usage {
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(u.Entries), u.Name)
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(u.Capacity), u.Name)
	}
	if lost, err := c.dp.TraceLost(); err != nil {
		c.log.Warn("read lost trace events", "err", err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.traceLost, prometheus.CounterValue, float64(lost))
	}
}
