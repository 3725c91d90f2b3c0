package main

import (
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"time"
)

// Result is one run, as the JSON line on standard output. CPU figures are
// user plus system time of each process over the run (publishing and
// draining); per delivered message, in microseconds. A field is null when
// the tool could not measure it (a gateway given by URL without
// -gateway-pid, a target without Redis).
type Result struct {
	Time     string `json:"time"`
	CPUs     int    `json:"cpus"`
	Target   string `json:"target"`
	Scenario string `json:"scenario"`

	Channels              int     `json:"channels"`
	SubscribersPerChannel int     `json:"subscribers_per_channel"`
	Connections           int     `json:"connections"`
	Publishers            int     `json:"publishers"`
	Publish               string  `json:"publish"`
	Rate                  float64 `json:"rate"` // 0: as fast as the publishers go
	Size                  int     `json:"size"`

	ConnectS    float64 `json:"connect_s"`  // connecting and subscribing every subscriber
	DurationS   float64 `json:"duration_s"` // publishing
	DrainS      float64 `json:"drain_s"`    // waiting for the last deliveries
	Interrupted bool    `json:"interrupted,omitempty"`

	Published     uint64  `json:"published"`
	PublishedPerS float64 `json:"published_per_s"`
	Expected      uint64  `json:"expected"`  // deliveries due: acknowledged publishes × their channel's subscribers
	Delivered     uint64  `json:"delivered"` // message frames received
	// DeliveredPerS is the deliveries received while publishing, per
	// second of it: the throughput.
	DeliveredPerS float64 `json:"delivered_per_s"`
	LatencyMS     Latency `json:"latency_ms"`

	GatewayCPUS             *float64        `json:"gateway_cpu_s"`
	RedisCPUS               *float64        `json:"redis_cpu_s"`
	LoadCPUS                float64         `json:"load_cpu_s"` // this tool's own
	GatewayUSPerDelivered   *float64        `json:"gateway_cpu_us_per_delivered"`
	RedisUSPerDelivered     *float64        `json:"redis_cpu_us_per_delivered"`
	ServerUSPerDelivered    *float64        `json:"server_cpu_us_per_delivered"` // gateway + Redis
	LoadUSPerDelivered      float64         `json:"load_cpu_us_per_delivered"`
	GatewayRSSMiB           *float64        `json:"gateway_rss_mib"`
	GatewayPeakRSSMiB       *float64        `json:"gateway_peak_rss_mib"`
	RedisNodes              *int            `json:"redis_nodes"`       // the Redis servers measured: 1, or a Cluster's masters
	RedisClientsMax         *int            `json:"redis_clients_max"` // Redis connections of everyone but this tool, summed over the nodes
	RedisClientsMaxPerNode  *int            `json:"redis_clients_max_per_node"`
	RedisClientsAtEnd       *int            `json:"redis_clients_end"`
	Verify                  Verdict         `json:"verify"`
	VsBare                  *Ratios         `json:"vs_bare,omitempty"`
	Idle                    *IdleResult     `json:"idle,omitempty"`
	Storm                   *StormResult    `json:"storm,omitempty"`
	ReqReply                *ReqReplyResult `json:"reqreply,omitempty"`
	gatewayCPU, serverCPU   float64         // per delivered, for the ratios
	haveGateway, haveServer bool
}

// Ratios compare a run with the bare broadcaster's, from the same
// invocation: above 1 is more.
type Ratios struct {
	DeliveredPerS float64 `json:"delivered_per_s"`
	// CPUPerDelivered is the gateway's plus Redis's CPU per delivered
	// message over the bare broadcaster's; GatewayCPUPerDelivered the
	// gateway's alone.
	CPUPerDelivered        *float64 `json:"cpu_per_delivered"`
	GatewayCPUPerDelivered *float64 `json:"gateway_cpu_per_delivered"`
	P99                    float64  `json:"p99"`
}

func (r *bench) result(s0, s1, s2 sample, expected uint64, maxClients, maxPerNode int) *Result {
	sp := r.spec
	window := s1.at.Sub(s0.at).Seconds()
	delivered := s2.delivered
	res := &Result{
		Time: s0.at.UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Target: r.tgt.name, Scenario: sp.scenario,
		Channels: sp.channels, SubscribersPerChannel: sp.subscribers, Connections: sp.connections(),
		Publishers: sp.publishers, Publish: sp.publish, Rate: sp.rate, Size: sp.size,
		DurationS: round3(window), DrainS: round3(s2.at.Sub(s1.at).Seconds()),
		Published: s1.published, PublishedPerS: round3(float64(s1.published) / window),
		Expected: expected, Delivered: delivered, DeliveredPerS: round3(float64(s1.delivered) / window),
		LatencyMS: r.hist.summary(),
	}
	perDelivered := func(d time.Duration) float64 {
		if delivered == 0 {
			return 0 // nothing to divide by; the verification fails the run anyway
		}
		return d.Seconds() * 1e6 / float64(delivered)
	}
	load := s2.self - s0.self
	res.LoadCPUS, res.LoadUSPerDelivered = round3(load.Seconds()), round3(perDelivered(load))
	var server time.Duration
	if s0.haveGateway && s2.haveGateway {
		gw := s2.gateway - s0.gateway
		server += gw
		res.GatewayCPUS, res.GatewayUSPerDelivered = ptr(round3(gw.Seconds())), ptr(round3(perDelivered(gw)))
		res.gatewayCPU, res.haveGateway = perDelivered(gw), true
		res.GatewayRSSMiB, res.GatewayPeakRSSMiB = ptr(round3(float64(s2.rss)/(1<<20))), ptr(round3(float64(s2.peakRSS)/(1<<20)))
	}
	if s0.haveRedis && s2.haveRedis {
		rd := s2.redis - s0.redis
		server += rd
		res.RedisCPUS, res.RedisUSPerDelivered = ptr(round3(rd.Seconds())), ptr(round3(perDelivered(rd)))
		res.RedisClientsMax, res.RedisClientsAtEnd = ptr(maxClients), ptr(s2.redisClients)
		res.RedisNodes, res.RedisClientsMaxPerNode = ptr(s2.redisNodes), ptr(maxPerNode)
	}
	if res.haveGateway {
		res.ServerUSPerDelivered = ptr(round3(perDelivered(server)))
		res.serverCPU, res.haveServer = perDelivered(server), true
	}
	return res
}

// compare sets res.VsBare from the bare broadcaster's result.
func (res *Result) compare(bare *Result) {
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0 // the bare run delivered nothing: no ratio
		}
		return round3(a / b)
	}
	v := &Ratios{DeliveredPerS: ratio(res.DeliveredPerS, bare.DeliveredPerS), P99: ratio(res.LatencyMS.P99, bare.LatencyMS.P99)}
	if res.haveServer && bare.haveServer {
		v.CPUPerDelivered = ptr(ratio(res.serverCPU, bare.serverCPU))
	}
	if res.haveGateway && bare.haveGateway {
		v.GatewayCPUPerDelivered = ptr(ratio(res.gatewayCPU, bare.gatewayCPU))
	}
	res.VsBare = v
}

// summarize writes res for humans.
func summarize(w io.Writer, res *Result) {
	if res.Idle != nil || res.Storm != nil {
		summarizeConns(w, res)
		return
	}
	if res.ReqReply != nil {
		summarizeReqReply(w, res)
		return
	}
	fmt.Fprintf(w, "\n== %s: %s, %d channels × %d subscribers, %d %s publishers", res.Target, res.Scenario,
		res.Channels, res.SubscribersPerChannel, res.Publishers, res.Publish)
	if res.Rate > 0 {
		fmt.Fprintf(w, " at %g msg/s", res.Rate)
	}
	fmt.Fprintf(w, ", %d B, %.1fs\n", res.Size, res.DurationS)
	fmt.Fprintf(w, "   delivered   %s/s (%d of %d due; published %s/s; drained in %.2fs)\n",
		si(res.DeliveredPerS), res.Delivered, res.Expected, si(res.PublishedPerS), res.DrainS)
	l := res.LatencyMS
	fmt.Fprintf(w, "   latency     p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f ms\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	if res.GatewayCPUS != nil {
		fmt.Fprintf(w, "   gateway     %.2f s CPU, %.2f µs per delivered; RSS %.0f MiB (peak %.0f)\n",
			*res.GatewayCPUS, *res.GatewayUSPerDelivered, *res.GatewayRSSMiB, *res.GatewayPeakRSSMiB)
	} else {
		fmt.Fprintln(w, "   gateway     CPU and memory not measured (give -gateway-pid)")
	}
	if res.RedisCPUS != nil {
		if *res.RedisNodes == 1 {
			fmt.Fprintf(w, "   redis       %.2f s CPU, %.2f µs per delivered; %d clients at most (%d at the end)\n",
				*res.RedisCPUS, *res.RedisUSPerDelivered, *res.RedisClientsMax, *res.RedisClientsAtEnd)
		} else {
			fmt.Fprintf(w, "   redis       %d masters together: %.2f s CPU, %.2f µs per delivered; %d clients at most (%d at the end), %d at most on one master\n",
				*res.RedisNodes, *res.RedisCPUS, *res.RedisUSPerDelivered, *res.RedisClientsMax, *res.RedisClientsAtEnd, *res.RedisClientsMaxPerNode)
		}
	}
	if res.ServerUSPerDelivered != nil && res.RedisCPUS != nil {
		fmt.Fprintf(w, "   server      %.2f µs CPU per delivered (gateway + Redis)\n", *res.ServerUSPerDelivered)
	}
	fmt.Fprintf(w, "   load tool   %.2f s CPU, %.2f µs per delivered\n", res.LoadCPUS, res.LoadUSPerDelivered)
	if v := res.VsBare; v != nil {
		fmt.Fprintf(w, "   vs bare     delivered/s %.2f×", v.DeliveredPerS)
		if v.CPUPerDelivered != nil {
			fmt.Fprintf(w, "  CPU per delivered %.2f× (gateway alone %.2f×)", *v.CPUPerDelivered, *v.GatewayCPUPerDelivered)
		}
		fmt.Fprintf(w, "  p99 %.2f×\n", v.P99)
	}
	summarizeVerdict(w, res.Verify)
}

// summarizeRounds writes, for -count, the median and range of each
// figure over the runs of each target: one run's figures move with the
// machine's speed, which on a shared machine drifts within a minute, and a
// ratio to a bare run taken just before is the steadiest figure there is.
func summarizeRounds(w io.Writer, results []*Result, target string) {
	names := []string{"bare", target}
	if target == "bare" {
		names = names[:1]
	}
	for _, name := range names {
		var runs []*Result
		for _, res := range results {
			if res.Target == name && res.Idle == nil && res.Storm == nil && res.ReqReply == nil {
				runs = append(runs, res)
			}
		}
		if len(runs) < 2 {
			continue
		}
		fmt.Fprintf(w, "\n== %s over %d runs: median (lowest – highest)\n", name, len(runs))
		line := func(label, unit string, of func(*Result) (float64, bool)) {
			var vals []float64
			for _, res := range runs {
				if v, ok := of(res); ok {
					vals = append(vals, v)
				}
			}
			if len(vals) == 0 {
				return
			}
			slices.Sort(vals)
			fmt.Fprintf(w, "   %-26s %s%s (%s – %s)\n", label, num(median(vals)), unit, num(vals[0]), num(vals[len(vals)-1]))
		}
		line("delivered/s", "", func(r *Result) (float64, bool) { return r.DeliveredPerS, true })
		line("CPU per delivered, µs", "", func(r *Result) (float64, bool) { return deref(r.ServerUSPerDelivered) })
		vs := func(of func(*Ratios) (float64, bool)) func(*Result) (float64, bool) {
			return func(r *Result) (float64, bool) {
				if r.VsBare == nil {
					return 0, false
				}
				return of(r.VsBare)
			}
		}
		line("vs bare: delivered/s", "×", vs(func(v *Ratios) (float64, bool) { return v.DeliveredPerS, true }))
		line("vs bare: CPU per delivered", "×", vs(func(v *Ratios) (float64, bool) { return deref(v.CPUPerDelivered) }))
		line("vs bare: gateway alone", "×", vs(func(v *Ratios) (float64, bool) { return deref(v.GatewayCPUPerDelivered) }))
		line("vs bare: p99", "×", vs(func(v *Ratios) (float64, bool) { return v.P99, true }))
	}
}

// median of sorted values.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func deref(p *float64) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}

// num writes a figure with three significant digits or more.
func num(v float64) string {
	if math.Abs(v) >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// summarizeVerdict writes a run's verification for humans.
func summarizeVerdict(w io.Writer, vd Verdict) {
	if vd.OK {
		fmt.Fprintf(w, "   verified    every message once and in order (%d gaps)\n", vd.Gaps)
	} else {
		fmt.Fprintf(w, "   FAILED      lost %d, duplicated or late %d, IDs out of order %d, gaps %d, disconnects %d, unexpected frames %d, publish errors %d, not resumed %d\n",
			vd.Lost, vd.Duplicates, vd.MisorderedIDs, vd.Gaps, vd.Disconnects, vd.Errors, vd.PublishErrors, vd.NotResumed)
		for _, p := range vd.Problems {
			fmt.Fprintf(w, "               %s\n", p)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// round3 keeps three decimals: the figures are not better than that.
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
