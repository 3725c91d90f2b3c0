package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// sample is one reading of the counters and of the processes.
type sample struct {
	at                   time.Time
	delivered, published uint64
	self                 time.Duration
	gateway, redis       time.Duration
	haveGateway          bool
	haveRedis            bool
	redisClients         int // summed over the nodes
	redisMaxClients      int // the most on one node
	redisNodes           int
	rss, peakRSS         uint64
}

func (r *bench) sample(ctx context.Context, probe *redisProbe) sample {
	s := sample{at: time.Now(), delivered: r.delivered.Load(), published: r.published.Load(), self: selfCPU()}
	if r.tgt.pid != 0 {
		if cpu, err := procCPU(r.tgt.pid); err == nil {
			s.gateway, s.haveGateway = cpu, true
		}
		s.rss, s.peakRSS, _ = procRSS(r.tgt.pid)
	}
	if probe != nil {
		if rs, err := probe.sample(ctx); err == nil {
			s.redis, s.redisClients, s.redisMaxClients, s.redisNodes, s.haveRedis = rs.cpu, rs.clients, rs.maxClients, rs.nodes, true
			if r.xadd != nil { // the tool's publishers are not the gateway's connections
				n := int(r.xadd.PoolStats().TotalConns)
				s.redisClients -= n
				s.redisMaxClients -= n // -publish xadd is refused on a cluster: one node
			}
		}
	}
	return s
}

// measure runs the load once against r.tgt and returns its result; an
// error means no result (a target that would not start, a subscriber
// that could not connect), not a failed verification.
func (r *bench) measure(ctx context.Context) (*Result, error) {
	switch r.spec.scenario {
	case "idle":
		return r.measureIdle(ctx)
	case "storm":
		return r.measureStorm(ctx)
	case "reqreply":
		return r.measureReqReply(ctx)
	}
	probe, err := r.openProbe(ctx)
	if err != nil {
		return nil, err
	}
	defer probe.close()
	setUpStart := time.Now()
	err = r.setUp(ctx)
	if err == nil {
		err = r.newPublishers(ctx)
	}
	if err != nil {
		r.tearDown(ctx)
		return nil, err
	}
	connectTime := time.Since(setUpStart)
	fmt.Fprintf(r.progress, "tslm-bench: [%s] %d channels, %d connections subscribed in %.1fs; publishing for %s\n",
		r.tgt.name, len(r.names), len(r.subs), connectTime.Seconds(), r.spec.duration)

	m, err := r.startMeter(ctx, probe)
	if err != nil {
		r.tearDown(ctx)
		return nil, err
	}
	s0 := m.s0
	var stop atomic.Bool
	published := make(chan struct{})
	go func() { r.publish(&stop); close(published) }()
	interrupted := m.window(r.spec.duration)
	stop.Store(true)
	<-published
	s1 := m.sample()

	// Drain: wait for what was published to arrive, until nothing moves
	// for two seconds, or for spec.drain at most.
	var expected uint64
	for _, p := range r.pubs {
		for _, seq := range p.acked {
			expected += seq * uint64(r.spec.subscribers)
		}
	}
	lastMove, lastAccepted := time.Now(), r.accepted.Load()
	m.drainWhile(func() bool {
		if a := r.accepted.Load(); a != lastAccepted {
			lastMove, lastAccepted = time.Now(), a
		}
		return r.accepted.Load() < expected && time.Since(lastMove) < 2*time.Second
	})
	s2 := m.sample()
	m.stop("publishing and draining")
	maxClients, maxPerNode := m.maxClients, m.maxPerNode
	r.tearDown(ctx)
	res := r.result(s0, s1, s2, expected, maxClients, maxPerNode)
	res.ConnectS = round3(connectTime.Seconds())
	res.Interrupted = interrupted
	res.Verify = r.verify()
	return res, nil
}

// openProbe connects to the target's Redis, when it has one, to sample
// its CPU and clients; nil (whose close does nothing) when it has none.
func (r *bench) openProbe(ctx context.Context) (*redisProbe, error) {
	if r.tgt.redisURL == "" {
		return nil, nil
	}
	return newRedisProbe(ctx, r.tgt.redisURL)
}

// meter samples a target over a run: a progress line a second, the
// largest Redis client counts seen, and the server's CPU profile when
// -cpuprofile asks for one.
type meter struct {
	r          *bench
	ctx        context.Context
	probe      *redisProbe
	tick       *time.Ticker
	profiling  bool
	s0, prev   sample
	maxClients int
	maxPerNode int
}

// startMeter starts the profile, if asked for, and takes the first
// sample.
func (r *bench) startMeter(ctx context.Context, probe *redisProbe) (*meter, error) {
	m := &meter{r: r, ctx: ctx, probe: probe, maxClients: -1, maxPerNode: -1}
	m.profiling = r.cpuprofile != "" && r.tgt.child != nil
	if m.profiling {
		if err := r.tgt.child.command("cpuprofile " + r.cpuprofile); err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
	}
	m.s0 = m.sample()
	m.prev = m.s0
	m.tick = time.NewTicker(time.Second)
	return m, nil
}

func (m *meter) sample() sample {
	s := m.r.sample(m.ctx, m.probe)
	if s.haveRedis {
		m.maxClients = max(m.maxClients, s.redisClients)
		m.maxPerNode = max(m.maxPerNode, s.redisMaxClients)
	}
	return s
}

func (m *meter) progress() {
	s := m.sample()
	m.r.printProgress(m.r.progress, m.prev, s, m.s0)
	m.prev = s
}

// window waits d, printing progress, and says whether ctx ended it first.
func (m *meter) window(d time.Duration) (interrupted bool) {
	window := time.NewTimer(d)
	defer window.Stop()
	for {
		select {
		case <-m.tick.C:
			m.progress()
		case <-window.C:
			return false
		case <-m.ctx.Done():
			return true
		}
	}
}

// drainWhile waits while more holds, for spec.drain at most, printing
// progress.
func (m *meter) drainWhile(more func() bool) {
	end := time.Now().Add(m.r.spec.drain)
	for time.Now().Before(end) && m.ctx.Err() == nil && more() {
		select {
		case <-m.tick.C:
			m.progress()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop ends the progress lines and the profile, which covered what.
func (m *meter) stop(what string) {
	m.tick.Stop()
	if !m.profiling {
		return
	}
	r := m.r
	if err := r.tgt.child.command("stop"); err != nil {
		fmt.Fprintf(r.progress, "tslm-bench: [%s] -cpuprofile: %v\n", r.tgt.name, err)
	} else {
		fmt.Fprintf(r.progress, "tslm-bench: [%s] CPU profile of %s in %s\n", r.tgt.name, what, r.cpuprofile)
	}
}

// printProgress writes one line about the second from a to b.
func (r *bench) printProgress(w io.Writer, a, b, start sample) {
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 {
		return
	}
	delivered, published := "delivered", "published"
	if r.spec.scenario == "reqreply" {
		delivered, published = "answered", "acked"
	}
	line := fmt.Sprintf("tslm-bench: [%s] %3.0fs  %s %s/s  %s %s/s  p99 %.2f ms",
		r.tgt.name, b.at.Sub(start.at).Seconds(), delivered, si(float64(b.delivered-a.delivered)/dt), published,
		si(float64(b.published-a.published)/dt), float64(r.hist.quantile(0.99))/1e6)
	if a.haveGateway && b.haveGateway {
		line += fmt.Sprintf("  gateway %3.0f%% CPU %s RSS", 100*(b.gateway-a.gateway).Seconds()/dt, mib(b.rss))
	}
	if a.haveRedis && b.haveRedis {
		line += fmt.Sprintf("  redis %3.0f%% CPU %d clients", 100*(b.redis-a.redis).Seconds()/dt, b.redisClients)
		if b.redisNodes > 1 {
			line += fmt.Sprintf(" on %d masters", b.redisNodes)
		}
	}
	line += fmt.Sprintf("  load %3.0f%% CPU", 100*(b.self-a.self).Seconds()/dt)
	fmt.Fprintln(w, line)
}

// si writes n with a k or M suffix.
func si(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.1fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}

func mib(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
