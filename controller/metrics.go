package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
)

// metrics of the controller's syncs.
type metrics struct {
	syncDuration prometheus.Histogram
	syncs        *prometheus.CounterVec
	programming  prometheus.Histogram
	objects      *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nodegress_sync_duration_seconds",
			Help:    "Time to compute the desired state and apply it to the datapath and the proxy.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodegress_syncs_total",
			Help: "Syncs by result (success or error).",
		}, []string{"result"}),
		programming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nodegress_network_programming_duration_seconds",
			Help: "Time from an endpoints change (the EndpointSlice's " + corev1.EndpointsLastChangeTriggerTime +
				" annotation) to the datapath and the proxy serving it, as kube-proxy's network_programming_duration_seconds.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 15),
		}),
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodegress_objects",
			Help: "Kubernetes objects the controller follows, by kind.",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.syncDuration, m.syncs, m.programming, m.objects)
	}
	return m
}

// observe wraps a sync so that its duration and result are recorded.
func (m *metrics) observe(sync func() error) func() error {
	return func() error {
		start := time.Now()
		err := sync()
		m.syncDuration.Observe(time.Since(start).Seconds())
		result := "success"
		if err != nil {
			result = "error"
		}
		m.syncs.WithLabelValues(result).Inc()
		return err
	}
}

// programmed observes the network programming latency of the changes a
// successful sync applied.
func (m *metrics) programmed(triggers map[string][]time.Time, now time.Time) {
	for _, ts := range triggers {
		for _, at := range ts {
			m.programming.Observe(now.Sub(at).Seconds())
		}
	}
}

func (m *metrics) setObjects(kind string, n int) {
	m.objects.WithLabelValues(kind).Set(float64(n))
}
