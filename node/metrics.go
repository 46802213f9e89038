package node

import (
	"sync"

	gometrics "github.com/hashicorp/go-metrics/compat"
	gmprom "github.com/hashicorp/go-metrics/compat/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// memberlist and Raft report through go-metrics' process-wide sink, so the
// bridge to Prometheus is process-wide too: one registry holds their
// metrics, and every agent's /metrics serves it beside the agent's own. In
// a one-process simulation the figures are the sum over its agents.
var (
	bridgeOnce     sync.Once
	bridgeRegistry = prometheus.NewRegistry()
	bridgeErr      error
)

// installMetricsBridge points go-metrics at a Prometheus sink registered in
// bridgeRegistry. Runtime metrics stay off: they need a goroutine that would
// outlive every agent (and a testing/synctest bubble).
func installMetricsBridge() error {
	bridgeOnce.Do(func() {
		sink, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{Registerer: bridgeRegistry})
		if err != nil {
			bridgeErr = err
			return
		}
		conf := gometrics.DefaultConfig("meridian")
		conf.EnableHostname = false
		conf.EnableRuntimeMetrics = false
		conf.EnableServiceLabel = false
		_, bridgeErr = gometrics.NewGlobal(conf, sink)
		if bridgeErr == nil {
			bridgeRegistry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		}
	})
	return bridgeErr
}

// agentMetrics are the agent's own gauges and counters, in its registry.
type agentMetrics struct {
	submitted   prometheus.Counter
	placed      *prometheus.CounterVec
	pending     prometheus.Gauge
	forwarded   prometheus.Counter
	reportsLeft prometheus.Gauge
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		submitted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "meridian", Name: "jobs_submitted_total",
			Help: "Jobs this node committed as its region's leader.",
		}),
		placed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "meridian", Name: "placements_total",
			Help: "Placements this node committed as its region's leader, by where they went (local, preempt — placed in the room of preempted allocations —, traded).",
		}, []string{"where"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "meridian", Name: "jobs_pending",
			Help: "Jobs of this node's region waiting for a placement (leader only).",
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "meridian", Name: "requests_forwarded_total",
			Help: "API requests this node forwarded to another node.",
		}),
		reportsLeft: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "meridian", Name: "task_reports_queued",
			Help: "Task state changes waiting to reach the region's leader.",
		}),
	}
	reg.MustRegister(m.submitted, m.placed, m.pending, m.forwarded, m.reportsLeft)
	return m
}

// registerTaskGauge exports the number of tasks running, read from the
// runner at each scrape: the worker loop looks at its tasks only when its
// allocations change, so a gauge it set would lag a task that ended.
func registerTaskGauge(reg prometheus.Registerer, running func() int) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "meridian", Name: "tasks_running",
		Help: "Tasks running on this node.",
	}, func() float64 { return float64(running()) }))
}
