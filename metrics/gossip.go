package metrics

import (
	"strings"
	"sync"
	"sync/atomic"

	gometrics "github.com/armon/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// gossipSink receives memberlist's go-metrics (memberlist reports through
// go-metrics' process-wide global, github.com/armon/go-metrics by default
// build tags) and keeps the few that say how much gossip flows. Every
// other key is dropped. Its methods run on memberlist's packet paths: they
// only add to atomics.
type gossipSink struct {
	udpSentBytes, udpSentPackets         atomic.Uint64
	udpReceivedBytes, udpReceivedPackets atomic.Uint64
	tcpSentBytes, tcpSends               atomic.Uint64
	tcpAccepts, tcpConnects              atomic.Uint64
	alive, suspect, dead                 atomic.Uint64
}

var _ gometrics.MetricSink = (*gossipSink)(nil)

var (
	sinkOnce sync.Once
	sink     = new(gossipSink)
)

// InstallGossipSink makes go-metrics' global report to meshnet's sink, so
// that memberlist's counters reach the meshnet_gossip_ metrics. It is
// process-wide and idempotent; several daemons in one process (tests)
// share the counts.
func InstallGossipSink() {
	sinkOnce.Do(func() {
		cfg := gometrics.DefaultConfig("")
		cfg.EnableHostname = false
		cfg.EnableRuntimeMetrics = false // the Go collector exports those
		cfg.EnableServiceLabel = false
		_, _ = gometrics.NewGlobal(cfg, sink) // errors only for a bad filter; there is none
	})
}

func (s *gossipSink) IncrCounter(key []string, val float32) { s.incr(key, val) }
func (s *gossipSink) IncrCounterWithLabels(key []string, val float32, _ []gometrics.Label) {
	s.incr(key, val)
}

func (s *gossipSink) incr(key []string, val float32) {
	if len(key) < 2 || key[0] != "memberlist" {
		return
	}
	n := uint64(max(val, 0))
	switch strings.Join(key[1:], ".") {
	case "udp.sent":
		s.udpSentBytes.Add(n)
		s.udpSentPackets.Add(1)
	case "udp.received":
		s.udpReceivedBytes.Add(n)
		s.udpReceivedPackets.Add(1)
	case "tcp.sent":
		s.tcpSentBytes.Add(n)
		s.tcpSends.Add(1)
	case "tcp.accept":
		s.tcpAccepts.Add(1)
	case "tcp.connect":
		s.tcpConnects.Add(1)
	case "msg.alive":
		s.alive.Add(1)
	case "msg.suspect":
		s.suspect.Add(1)
	case "msg.dead":
		s.dead.Add(1)
	}
}

func (s *gossipSink) SetGauge([]string, float32)                               {}
func (s *gossipSink) SetGaugeWithLabels([]string, float32, []gometrics.Label)  {}
func (s *gossipSink) EmitKey([]string, float32)                                {}
func (s *gossipSink) AddSample([]string, float32)                              {}
func (s *gossipSink) AddSampleWithLabels([]string, float32, []gometrics.Label) {}

var (
	gossipBytesDesc = prometheus.NewDesc("meshnet_gossip_bytes_total",
		"Gossip bytes by direction and transport (memberlist's UDP packets and TCP push/pull streams; TCP bytes received are not counted by memberlist).",
		[]string{"direction", "transport"}, nil)
	gossipPacketsDesc = prometheus.NewDesc("meshnet_gossip_packets_total",
		"Gossip UDP packets by direction (a packet may carry several messages).",
		[]string{"direction"}, nil)
	gossipStreamsDesc = prometheus.NewDesc("meshnet_gossip_streams_total",
		"Gossip TCP streams (push/pull state exchanges and fallback probes) by direction: outbound connects, inbound accepts.",
		[]string{"direction"}, nil)
	gossipMessagesDesc = prometheus.NewDesc("meshnet_gossip_membership_messages_total",
		"Membership messages handled by type (alive, suspect, dead).",
		[]string{"type"}, nil)
)

func (s *gossipSink) describe(ch chan<- *prometheus.Desc) {
	ch <- gossipBytesDesc
	ch <- gossipPacketsDesc
	ch <- gossipStreamsDesc
	ch <- gossipMessagesDesc
}

func (s *gossipSink) collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v *atomic.Uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v.Load()), labels...)
	}
	counter(gossipBytesDesc, &s.udpSentBytes, "sent", "udp")
	counter(gossipBytesDesc, &s.udpReceivedBytes, "received", "udp")
	counter(gossipBytesDesc, &s.tcpSentBytes, "sent", "tcp")
	counter(gossipPacketsDesc, &s.udpSentPackets, "sent")
	counter(gossipPacketsDesc, &s.udpReceivedPackets, "received")
	counter(gossipStreamsDesc, &s.tcpConnects, "outbound")
	counter(gossipStreamsDesc, &s.tcpAccepts, "inbound")
	counter(gossipMessagesDesc, &s.alive, "alive")
	counter(gossipMessagesDesc, &s.suspect, "suspect")
	counter(gossipMessagesDesc, &s.dead, "dead")
}
