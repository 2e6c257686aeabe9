package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Events counts what happens between scrapes. Its methods are safe for
// concurrent use; a nil *Events ignores everything (metrics off).
type Events struct {
	applies       prometheus.Counter
	applyErrors   prometheus.Counter
	applyDuration prometheus.Histogram
}

func newEvents() *Events {
	return &Events{
		applies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshnet_dataplane_applies_total",
			Help: "Dataplane applies (the desired state written to the kernel), on every store change and every resync.",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshnet_dataplane_apply_errors_total",
			Help: "Dataplane applies that could not do everything (meshctl status shows the last error).",
		}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshnet_dataplane_apply_duration_seconds",
			Help:    "How long a dataplane apply took, errors included.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
	}
}

func (e *Events) collectors() []prometheus.Collector {
	return []prometheus.Collector{e.applies, e.applyErrors, e.applyDuration}
}

// Applied records one dataplane apply that took d and ended with err.
func (e *Events) Applied(d time.Duration, err error) {
	if e == nil {
		return
	}
	e.applies.Inc()
	if err != nil {
		e.applyErrors.Inc()
	}
	e.applyDuration.Observe(d.Seconds())
}
