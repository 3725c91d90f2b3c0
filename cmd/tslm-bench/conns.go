package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The connection-side scenarios: idle (what a connection costs the
// gateway at rest) and storm (every subscriber dropped at once, then
// resuming what it missed). Both connect spec.conns subscribers, one
// connection each, subscriber i on channel i % spec.channels.

// IdleResult is -scenario idle's part of the JSON line. Memory is the
// gateway's: RSS from /proc/<pid>/status, the Go heap in use from its
// /metrics (go_memstats_heap_inuse_bytes); null when not measurable (a
// URL target without -gateway-pid; the bare broadcaster has no /metrics).
type IdleResult struct {
	SettleS float64 `json:"settle_s"`
	GC      bool    `json:"gc"` // -gc: read after the server collected its garbage
	// Before connecting (the channels created), and with every
	// connection open and settled.
	RSSBeforeMiB  *float64 `json:"rss_before_mib"`
	RSSMiB        *float64 `json:"rss_mib"`
	HeapBeforeMiB *float64 `json:"heap_before_mib"`
	HeapMiB       *float64 `json:"heap_mib"`
	// (with − before) / connections.
	RSSPerConn  *float64 `json:"rss_bytes_per_conn"`
	HeapPerConn *float64 `json:"heap_bytes_per_conn"`
	// The target's per-connection figures over the bare broadcaster's.
	VsBare *IdleRatios `json:"vs_bare,omitempty"`
}

// IdleRatios compare idle connections with the bare broadcaster's.
type IdleRatios struct {
	RSSPerConn float64 `json:"rss_bytes_per_conn"`
}

// StormResult is -scenario storm's part of the JSON line.
type StormResult struct {
	Messages int  `json:"messages_per_channel"` // published while the subscribers were down
	GC       bool `json:"gc"`                   // -gc: memory read after the server collected its garbage
	// BaselineS is the time the subscribers took to connect and
	// subscribe fresh; CatchUpS the time from the reconnect until every
	// one of them had received every message it missed; Ratio the one
	// over the other. Both open -dialers connections at a time.
	BaselineS float64  `json:"baseline_connect_s"`
	DropS     float64  `json:"drop_s,omitempty"`    // closing every socket
	PublishS  float64  `json:"publish_s,omitempty"` // publishing the missed messages
	CatchUpS  *float64 `json:"catch_up_s"`
	Ratio     *float64 `json:"catch_up_vs_connect"`
	CaughtUp  bool     `json:"caught_up"`
	// The gateway's memory with every subscriber connected and settled
	// (idle), the highest RSS seen from the drop to the catch-up (sampled
	// every 100 ms), and after the catch-up and -settle; AfterVsIdle is
	// RSS after over idle.
	RSSIdleMiB   *float64 `json:"rss_idle_mib"`
	RSSPeakMiB   *float64 `json:"rss_peak_mib"`
	RSSAfterMiB  *float64 `json:"rss_after_mib"`
	AfterVsIdle  *float64 `json:"rss_after_vs_idle"`
	HeapIdleMiB  *float64 `json:"heap_idle_mib"`
	HeapAfterMiB *float64 `json:"heap_after_mib"`
	// BaselineVsBare is the fresh connect time over the bare
	// broadcaster's.
	BaselineVsBare *float64 `json:"baseline_vs_bare,omitempty"`
	// Skipped says why the storm itself was not run (the bare
	// broadcaster has no backlog to resume from).
	Skipped string `json:"skipped,omitempty"`
}

// memory is one reading of the gateway's memory; a field is nil when it
// cannot be read.
type memory struct {
	rss, heap *uint64
}

// readMemory reads the target's RSS (from /proc, with its pid) and Go
// heap in use (from its /metrics), with -gc after a server the tool
// started has collected its garbage.
func (r *bench) readMemory(ctx context.Context) memory {
	var m memory
	if r.spec.gc && r.tgt.child != nil {
		if err := r.tgt.child.command("gc"); err != nil {
			fmt.Fprintf(r.progress, "tslm-bench: [%s] -gc: %v\n", r.tgt.name, err)
		}
	}
	if r.tgt.pid != 0 {
		if rss, _, err := procRSS(r.tgt.pid); err == nil {
			m.rss = &rss
		}
	}
	if h, ok := r.heapInuse(ctx); ok {
		m.heap = &h
	}
	return m
}

// heapInuse reads go_memstats_heap_inuse_bytes from the internal
// listener's /metrics.
func (r *bench) heapInuse(ctx context.Context) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.tgt.api+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	resp, err := r.httpc.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return 0, false
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return uint64(f), err == nil
		}
	}
	return 0, false
}

func mibOf(v *uint64) *float64 {
	if v == nil {
		return nil
	}
	return ptr(round3(float64(*v) / (1 << 20)))
}

// perConn is (with − before) / n, nil when either is unknown.
func perConn(before, with *uint64, n int) *float64 {
	if before == nil || with == nil || n == 0 {
		return nil
	}
	return ptr(round3((float64(*with) - float64(*before)) / float64(n)))
}

// ticking prints line() to the progress writer every second until the
// returned function is called.
func (r *bench) ticking(line func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				l := fmt.Sprintf("tslm-bench: [%s] %3.0fs  %s", r.tgt.name, time.Since(start).Seconds(), line())
				if r.tgt.pid != 0 {
					if rss, _, err := procRSS(r.tgt.pid); err == nil {
						l += "  gateway RSS " + mib(rss)
					}
				}
				fmt.Fprintln(r.progress, l)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// connectTimed connects and subscribes every subscriber, with a progress
// line, and returns how long it took.
func (r *bench) connectTimed(ctx context.Context) (time.Duration, error) {
	n := r.spec.subscriptions()
	stop := r.ticking(func() string { return fmt.Sprintf("%d of %d connected and subscribed", r.connected.Load(), n) })
	start := time.Now()
	err := r.connectAll(ctx)
	took := time.Since(start)
	stop()
	return took, err
}

// publishRound publishes k messages to every channel, publisher p to the
// channels c with c % publishers == p (so each publisher's sends stay
// one at a time), and returns the first error.
func (r *bench) publishRound(ctx context.Context, k int) error {
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	var buf [][]byte = make([][]byte, len(r.pubs))
	for pi, p := range r.pubs {
		wg.Go(func() {
			for c := pi; c < len(r.names) && ctx.Err() == nil; c += len(r.pubs) {
				for range k {
					p.seq[c]++
					buf[pi] = payload(buf[pi], time.Now().UnixNano(), p.idx, p.seq[c], r.spec.size)
					cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					err := p.send(cctx, r.names[c], buf[pi])
					cancel()
					if err != nil {
						r.pubErrors.Add(1)
						err = fmt.Errorf("publisher %d on %s: %w", p.idx, r.names[c], err)
						if first.CompareAndSwap(nil, &err) {
							r.errMu.Lock()
							r.pubErrMsg = err.Error()
							r.errMu.Unlock()
						}
						return // the channel's later messages would not be in order
					}
					p.acked[c] = p.seq[c]
					r.published.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		return *e
	}
	return ctx.Err()
}

// expectedAccepted is the deliveries due: every acknowledged message of
// a channel to each of its subscribers.
func (r *bench) expectedAccepted() uint64 {
	perChannel := make([]uint64, len(r.names))
	for _, p := range r.pubs {
		for c, a := range p.acked {
			perChannel[c] += a
		}
	}
	var n uint64
	for i := range r.spec.subscriptions() {
		n += perChannel[i%len(r.names)]
	}
	return n
}

// await waits until the subscribers have accepted want messages, or for
// limit, with a progress line; it reports whether they did.
func (r *bench) await(ctx context.Context, what string, want uint64, limit time.Duration) bool {
	stop := r.ticking(func() string {
		return fmt.Sprintf("%s: %d of %d messages received  %d connected", what, r.accepted.Load(), want, r.connected.Load())
	})
	defer stop()
	end := time.Now().Add(limit)
	for r.accepted.Load() < want {
		if time.Now().After(end) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// baseResult fills the fields every scenario has.
func (r *bench) baseResult(at time.Time, connect time.Duration, self time.Duration) *Result {
	sp := r.spec
	n := sp.subscriptions()
	return &Result{
		Time: at.UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Target: r.tgt.name, Scenario: sp.scenario,
		Channels: sp.channels, SubscribersPerChannel: (n + sp.channels - 1) / sp.channels, Connections: sp.connections(),
		Publishers: sp.publishers, Publish: sp.publish, Size: sp.size,
		ConnectS: round3(connect.Seconds()), Published: r.published.Load(), PublishedPerS: 0,
		Expected: r.expectedAccepted(), Delivered: r.delivered.Load(), LatencyMS: r.hist.summary(),
		LoadCPUS: round3((selfCPU() - self).Seconds()),
	}
}

// prepareConns creates the channels and the publishers of the idle and
// storm scenarios, tearing the run down if it cannot.
func (r *bench) prepareConns(ctx context.Context) error {
	err := r.createChannels(ctx)
	if err == nil {
		err = r.newPublishers(ctx)
	}
	if err != nil {
		r.tearDown(ctx)
	}
	return err
}

// measureIdle runs -scenario idle: connect every subscriber, let the
// gateway settle, read its memory, then publish one message to every
// channel to prove every connection still open and subscribed.
func (r *bench) measureIdle(ctx context.Context) (*Result, error) {
	at, self := time.Now(), selfCPU()
	if err := r.prepareConns(ctx); err != nil {
		return nil, err
	}
	before := r.readMemory(ctx)
	connect, err := r.connectTimed(ctx)
	if err != nil {
		r.tearDown(ctx)
		return nil, err
	}
	fmt.Fprintf(r.progress, "tslm-bench: [%s] %d connections subscribed to %d channels in %.1fs; settling for %s\n",
		r.tgt.name, len(r.subs), len(r.names), connect.Seconds(), r.spec.settle)
	pause(ctx, r.spec.settle)
	with := r.readMemory(ctx)
	err = r.publishRound(ctx, 1)
	caught := err == nil && r.await(ctx, "verifying", r.expectedAccepted(), r.spec.drain)
	r.tearDown(ctx)
	res := r.baseResult(at, connect, self)
	res.Interrupted = ctx.Err() != nil
	n := len(r.subs)
	res.Idle = &IdleResult{
		SettleS: round3(r.spec.settle.Seconds()), GC: r.spec.gc && r.tgt.child != nil,
		RSSBeforeMiB: mibOf(before.rss), RSSMiB: mibOf(with.rss), HeapBeforeMiB: mibOf(before.heap), HeapMiB: mibOf(with.heap),
		RSSPerConn: perConn(before.rss, with.rss, n), HeapPerConn: perConn(before.heap, with.heap, n),
	}
	res.Verify = r.verify()
	if !caught && res.Verify.OK {
		res.Verify.OK = false
		res.Verify.problem("the verification messages did not all arrive in time")
	}
	return res, nil
}

// measureStorm runs -scenario storm: connect every subscriber fresh (the
// baseline), publish one message to every channel so that each has an ID
// to resume from, settle; then close every socket at once, publish
// spec.messages to every channel, reconnect everyone resubscribing with
// since = the last ID it received, and time until every missed message
// has arrived.
func (r *bench) measureStorm(ctx context.Context) (*Result, error) {
	at, self := time.Now(), selfCPU()
	if err := r.prepareConns(ctx); err != nil {
		return nil, err
	}
	baseline, err := r.connectTimed(ctx)
	if err != nil {
		r.tearDown(ctx)
		return nil, err
	}
	fmt.Fprintf(r.progress, "tslm-bench: [%s] baseline: %d connections subscribed to %d channels in %.2fs\n",
		r.tgt.name, len(r.subs), len(r.names), baseline.Seconds())
	st := &StormResult{Messages: r.spec.messages, BaselineS: round3(baseline.Seconds()), GC: r.spec.gc && r.tgt.child != nil}
	finish := func() (*Result, error) {
		r.tearDown(ctx)
		res := r.baseResult(at, baseline, self)
		res.Interrupted = ctx.Err() != nil
		res.Storm = st
		res.Verify = r.verify()
		if !st.CaughtUp && st.Skipped == "" && res.Verify.OK {
			res.Verify.OK = false
			res.Verify.problem("the subscribers had not caught up by -drain")
		}
		return res, nil
	}
	err = r.publishRound(ctx, 1)
	if err != nil || !r.await(ctx, "first message", r.expectedAccepted(), r.spec.drain) {
		st.Skipped = "the first message did not reach every subscriber"
		return finish()
	}
	if r.tgt.name == "bare" {
		st.Skipped = "the bare broadcaster has no backlog to resume from: only the fresh-connect baseline is measured"
		return finish()
	}
	pause(ctx, r.spec.settle)
	idle := r.readMemory(ctx)
	st.RSSIdleMiB, st.HeapIdleMiB = mibOf(idle.rss), mibOf(idle.heap)

	// The peak: sampled from the drop to the catch-up.
	var peak atomic.Uint64
	if idle.rss != nil {
		peak.Store(*idle.rss)
	}
	sampling := make(chan struct{})
	var sampler sync.WaitGroup
	if r.tgt.pid != 0 {
		sampler.Go(func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-sampling:
					return
				case <-t.C:
					if rss, _, err := procRSS(r.tgt.pid); err == nil && rss > peak.Load() {
						peak.Store(rss)
					}
				}
			}
		})
	}
	stopSampling := func() {
		close(sampling)
		sampler.Wait()
		if idle.rss != nil {
			st.RSSPeakMiB = mibOf(ptr(peak.Load()))
		}
	}

	// Drop: close every socket, without a close frame, as a network
	// failure or a load balancer restart would.
	start := time.Now()
	for _, s := range r.subs {
		s.closing.Store(true)
		s.ws.Close()
	}
	for _, s := range r.subs {
		<-s.done
	}
	r.connected.Store(0)
	st.DropS = round3(time.Since(start).Seconds())
	fmt.Fprintf(r.progress, "tslm-bench: [%s] %d connections dropped; publishing %d messages to each of %d channels\n",
		r.tgt.name, len(r.subs), r.spec.messages, len(r.names))
	start = time.Now()
	if err := r.publishRound(ctx, r.spec.messages); err != nil {
		stopSampling()
		st.Skipped = "publishing the missed messages failed: " + err.Error()
		return finish()
	}
	st.PublishS = round3(time.Since(start).Seconds())
	want := r.expectedAccepted()

	// The storm: everyone reconnects and resumes.
	fmt.Fprintf(r.progress, "tslm-bench: [%s] reconnecting %d subscribers, each resuming %d messages\n",
		r.tgt.name, len(r.subs), r.spec.messages)
	var notResumed atomic.Uint64
	start = time.Now()
	stop := r.ticking(func() string {
		return fmt.Sprintf("storm: %d of %d reconnected  %d of %d messages received", r.connected.Load(), len(r.subs), r.accepted.Load(), want)
	})
	err = r.each(ctx, len(r.subs), func(ctx context.Context, i int) error {
		s := r.subs[i]
		resumed, err := r.connect(ctx, i, s, s.st.lastID())
		if err == nil && !resumed {
			notResumed.Add(1)
		}
		return err
	})
	stop()
	if err != nil {
		stopSampling()
		st.Skipped = "reconnecting failed: " + err.Error()
		return finish()
	}
	st.CaughtUp = r.await(ctx, "catching up", want, r.spec.drain)
	catchUp := time.Since(start)
	stopSampling()
	if st.CaughtUp {
		st.CatchUpS = ptr(round3(catchUp.Seconds()))
		if baseline > 0 {
			st.Ratio = ptr(round3(catchUp.Seconds() / baseline.Seconds()))
		}
	}
	pause(ctx, r.spec.settle)
	after := r.readMemory(ctx)
	st.RSSAfterMiB, st.HeapAfterMiB = mibOf(after.rss), mibOf(after.heap)
	if idle.rss != nil && after.rss != nil && *idle.rss > 0 {
		st.AfterVsIdle = ptr(round3(float64(*after.rss) / float64(*idle.rss)))
	}
	res, _ := finish()
	res.Verify.NotResumed = notResumed.Load()
	if res.Verify.NotResumed > 0 {
		res.Verify.problem(fmt.Sprintf("%d resubscribes were answered resumed:false", res.Verify.NotResumed))
		res.Verify.decide(r.spec.allowGaps)
	}
	return res, nil
}

// compareConns sets the ratios of an idle or storm run to the bare
// broadcaster's.
func (res *Result) compareConns(bare *Result) {
	switch {
	case res.Idle != nil && bare.Idle != nil:
		if res.Idle.RSSPerConn != nil && bare.Idle.RSSPerConn != nil && *bare.Idle.RSSPerConn > 0 {
			res.Idle.VsBare = &IdleRatios{RSSPerConn: round3(*res.Idle.RSSPerConn / *bare.Idle.RSSPerConn)}
		}
	case res.Storm != nil && bare.Storm != nil && bare.Storm.BaselineS > 0:
		res.Storm.BaselineVsBare = ptr(round3(res.Storm.BaselineS / bare.Storm.BaselineS))
	}
}

// summarizeConns writes an idle or storm result for humans.
func summarizeConns(w io.Writer, res *Result) {
	fmt.Fprintf(w, "\n== %s: %s, %d connections on %d channels (%d publishers, %s)\n",
		res.Target, res.Scenario, res.Connections, res.Channels, res.Publishers, res.Publish)
	fmt.Fprintf(w, "   connect     %.2fs for every connection to connect and subscribe\n", res.ConnectS)
	opt := func(v *float64, unit string) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.1f %s", *v, unit)
	}
	if i := res.Idle; i != nil {
		if i.GC {
			fmt.Fprintln(w, "   memory      read after the server collected its garbage (-gc)")
		}
		fmt.Fprintf(w, "   RSS         %s before, %s with them after %.0fs: %s per connection\n",
			opt(i.RSSBeforeMiB, "MiB"), opt(i.RSSMiB, "MiB"), i.SettleS, opt(i.RSSPerConn, "B"))
		fmt.Fprintf(w, "   Go heap     %s before, %s with them: %s per connection\n",
			opt(i.HeapBeforeMiB, "MiB"), opt(i.HeapMiB, "MiB"), opt(i.HeapPerConn, "B"))
		if i.VsBare != nil {
			fmt.Fprintf(w, "   vs bare     RSS per connection %.2f×\n", i.VsBare.RSSPerConn)
		}
	}
	if s := res.Storm; s != nil {
		if s.GC && s.Skipped == "" {
			fmt.Fprintln(w, "   memory      read after the server collected its garbage (-gc)")
		}
		if s.Skipped != "" {
			fmt.Fprintf(w, "   storm       skipped: %s\n", s.Skipped)
		} else {
			fmt.Fprintf(w, "   storm       dropped in %.2fs; %d messages per channel published in %.2fs while down\n", s.DropS, s.Messages, s.PublishS)
			if s.CaughtUp {
				fmt.Fprintf(w, "   catch-up    %.2fs for every subscriber to reconnect and receive what it missed: %.2f× the fresh connect (%.2fs)\n",
					*s.CatchUpS, *s.Ratio, s.BaselineS)
			} else {
				fmt.Fprintln(w, "   catch-up    NOT every subscriber caught up within -drain")
			}
			fmt.Fprintf(w, "   RSS         idle %s, peak %s, after %s", opt(s.RSSIdleMiB, "MiB"), opt(s.RSSPeakMiB, "MiB"), opt(s.RSSAfterMiB, "MiB"))
			if s.AfterVsIdle != nil {
				fmt.Fprintf(w, " (after/idle %.2f×)", *s.AfterVsIdle)
			}
			fmt.Fprintf(w, "; Go heap idle %s, after %s\n", opt(s.HeapIdleMiB, "MiB"), opt(s.HeapAfterMiB, "MiB"))
		}
		if s.BaselineVsBare != nil {
			fmt.Fprintf(w, "   vs bare     fresh connect time %.2f×\n", *s.BaselineVsBare)
		}
	}
	summarizeVerdict(w, res.Verify)
}
