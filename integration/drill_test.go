package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	tslmclient "github.com/tslm/tslm/client"
)

// The fault drills of issue 17, through the real balancer: the faults an
// operator of the compose stack meets, one after the other, while both
// publishing paths run and hundreds of subscribers, run by the Go client
// that users run, stay subscribed through HAProxy.

const (
	drillClients = 200
	drillChannel = "drill"
	// drillPoll is the replicas' TSLM_POLL_INTERVAL, shortened from 2s
	// so that drillPause exceeds the silence after which a pub/sub
	// connection is replaced (two intervals and a second) without a long
	// test. drillPause also exceeds TSLM_OPERATION_TIMEOUT (5s), so that
	// the replicas find the backlog unavailable, and their /readyz fails
	// for longer than haproxy's health checks take to mark them all down.
	drillPoll  = time.Second
	drillPause = 7 * time.Second
	// drillPublishers publishers per path (HTTP API, XADD) each publish
	// one message at a time, drillEvery after the last one's answer.
	drillPerPath = 2
	drillEvery   = 20 * time.Millisecond
	// drillDrainDelay is compose's TSLM_DRAIN_DELAY.
	drillDrainDelay = 3 * time.Second
)

// TestDrillsThroughHAProxy runs the topology of docker-compose.yml as
// processes (Redis with AOF, three replicas of the real binary, HAProxy
// with deploy/haproxy.cfg finding them by DNS), with 200 subscribers
// through HAProxy's public frontend and publishers that never stop, on
// two paths: through HAProxy's internal frontend (HTTP API, retried with
// an idempotency key), and XADD into Redis directly. In turn: a fourth
// replica starts; a replica is stopped with SIGTERM, then started again;
// one is killed with SIGKILL, then started again; Redis restarts from its
// AOF; Redis is frozen with SIGSTOP for longer than the readers' block
// timeout. After each, every subscriber has every message of the stream
// so far, once and in order (nothing is lost in these faults, so no gap
// or resumed:false is accepted), and the reconnect times are logged. At
// the end no connection or goroutine is left behind, in the replicas or
// in the test.
func TestDrillsThroughHAProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 170*time.Second)
	defer cancel()
	c := startCluster(t, 3, map[string]string{
		"TSLM_POLL_INTERVAL":  drillPoll.String(),
		"TSLM_SHUTDOWN_GRACE": "5s",
		// As docker-compose.yml sets it: above the time haproxy's health
		// checks (inter 1s, fall 2) take to mark a draining replica down.
		"TSLM_DRAIN_DELAY": drillDrainDelay.String(),
	})
	if status := httpStatus(http.MethodPut, c.lb.apiURL+"/v1/channels/"+drillChannel, `{"max_len":100000}`); status != http.StatusCreated {
		t.Fatalf("creating the channel through haproxy: %d", status)
	}
	d := &drill{t: t, ctx: ctx, c: c, rdb: c.redis.Client(), reports: map[string]*drillReport{}}
	http.DefaultClient.CloseIdleConnections()
	baseGoroutines, baseProcesses := runtime.NumGoroutine(), len(c.running())

	started := time.Now()
	d.subscribe()
	d.logSpread("after subscribing")
	for _, n := range c.running() {
		if k := d.connections(n); k == 0 {
			t.Fatalf("no subscriber on %s: haproxy did not spread them: %v", n.ip, d.spread())
		}
	}
	pubs := startDrillPublishers(ctx, t, c)
	d.pubs = pubs
	d.run("steady", func() {})

	d.run("replica added", func() {
		c.add()
		c.waitRouted()
	})
	d.noDisconnects("replica added")
	added := c.nodes[len(c.nodes)-1]

	sigterm := c.nodes[0]
	d.run("SIGTERM replica", func() {
		k := d.connections(sigterm)
		if k == 0 {
			t.Fatalf("no subscriber on %s to move: %v", sigterm.ip, d.spread())
		}
		c.signal(sigterm, syscall.SIGTERM)
		d.downBeforeClosed("SIGTERM replica", sigterm)
		if err := sigterm.proc.wait(t, 30*time.Second); err != nil {
			t.Errorf("replica exit after SIGTERM: %v, want status 0; stderr:\n%s", err, sigterm.proc.output())
		}
		c.stopped(sigterm)
		d.waitMoved("SIGTERM replica", k, websocket1001)
		c.start(sigterm) // as compose's restart policy would
		c.waitRouted()
	})
	// leastconn sent the moved subscribers first to the replica that
	// started under traffic, which had none.
	if k := d.connections(added); k == 0 {
		t.Errorf("the replica started under traffic has no subscriber after one replica's subscribers moved: %v", d.spread())
	}

	killed := c.nodes[1]
	d.run("SIGKILL replica", func() {
		k := d.connections(killed)
		if k == 0 {
			t.Fatalf("no subscriber on %s to move: %v", killed.ip, d.spread())
		}
		c.signal(killed, syscall.SIGKILL)
		var exit *exec.ExitError
		if err := killed.proc.wait(t, 30*time.Second); !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() {
			t.Errorf("replica exit after SIGKILL: %v, want killed by the signal", err)
		}
		c.stopped(killed)
		d.waitMoved("SIGKILL replica", k, websocket1006)
		c.start(killed)
		c.waitRouted()
	})

	// The readers may not notice a restart: a reader whose connection
	// was closed retries at once, on a new one.
	d.run("Redis restart (AOF)", func() {
		c.redis.Restart()
		c.waitRouted()
	})
	d.noDisconnects("Redis restart (AOF)")

	d.run("Redis SIGSTOP "+drillPause.String(), func() {
		defer d.markedDown("Redis SIGSTOP")()
		thaw := c.redis.Hang()
		select { // the length of the fault, not a wait for an outcome
		case <-time.After(drillPause):
		case <-ctx.Done():
		}
		thaw()
		c.waitRouted()
	})
	d.noDisconnects("Redis SIGSTOP " + drillPause.String())

	pubs.stop()
	d.run("final", func() {})
	d.checkPublished()
	d.logSpread("at the end")
	t.Logf("%d subscribers, %d messages (%d through the HTTP API, %d by XADD) in %.0fs",
		drillClients, d.checked, pubs.api.Load(), pubs.xadd.Load(), time.Since(started).Seconds())
	d.logReports()

	d.closeAll()
	d.checkNoLeaks(baseGoroutines, baseProcesses)
}

const (
	websocket1001 = 1001 // going away: the replica shuts down
	websocket1006 = 1006 // no close frame: the replica died
)

// drill runs the drills and checks their outcome.
type drill struct {
	t    *testing.T
	ctx  context.Context
	c    *cluster
	rdb  *redis.Client
	pubs *drillPublishers
	subs []*drillSub

	checkedUpTo backlog.ID // every subscriber's messages were checked up to it
	checked     int        // messages checked

	order   []string
	reports map[string]*drillReport
}

type drillReport struct {
	took       time.Duration
	messages   int // in the stream once it was over
	reconnects []reconnect
	stalls     []time.Duration // per subscriber, its longest wait between two messages
	apiRetries int64
	xaddRetry  int64
}

// run runs fault, waits until every subscriber has every message of the
// stream so far, checks them, and records the drill's figures.
func (d *drill) run(name string, fault func()) {
	d.t.Helper()
	if d.t.Failed() {
		d.t.FailNow()
	}
	for _, s := range d.subs {
		s.begin(name)
	}
	apiRetries, xaddRetries := d.pubs.apiRetries.Load(), d.pubs.xaddRetries.Load()
	api, xadd := d.pubs.api.Load(), d.pubs.xadd.Load()
	began := time.Now()
	fault()
	d.checkpoint(name)
	if name != "final" {
		// Both paths got through since the fault, not only before it.
		eventually(d.t, 30*time.Second, name+": a publishing path stalls: "+d.pubs.String(), func() bool {
			return d.pubs.api.Load() > api && d.pubs.xadd.Load() > xadd
		})
	}
	r := &drillReport{
		took:       time.Since(began),
		messages:   d.checked,
		apiRetries: d.pubs.apiRetries.Load() - apiRetries,
		xaddRetry:  d.pubs.xaddRetries.Load() - xaddRetries,
	}
	for _, s := range d.subs {
		rs, stall := s.drillFigures(name)
		r.reconnects = append(r.reconnects, rs...)
		r.stalls = append(r.stalls, stall)
	}
	d.order = append(d.order, name)
	d.reports[name] = r
}

// checkpoint waits (bounded) until every subscriber has received the
// stream's newest message as of now, then checks that each received
// exactly the stream's messages since the last checkpoint, in order.
func (d *drill) checkpoint(name string) {
	d.t.Helper()
	head := d.head()
	deadline := time.Now().Add(60 * time.Second)
	for {
		behind := 0
		var example string
		for _, s := range d.subs {
			if last, state := s.position(); last.Less(head) {
				behind++
				example = fmt.Sprintf("subscriber %d at %s, %s", s.n, last, state)
			}
		}
		if behind == 0 {
			break
		}
		if time.Now().After(deadline) || d.ctx.Err() != nil {
			d.t.Fatalf("%s: %d of %d subscribers lack messages up to %s after 60s (e.g. %s); publishers: %s; spread %v",
				name, behind, len(d.subs), head, example, d.pubs, d.spread())
		}
		time.Sleep(20 * time.Millisecond)
	}
	from := "-"
	if d.checkedUpTo != backlog.Zero {
		from = "(" + d.checkedUpTo.String()
	}
	xs, err := d.rdb.XRange(d.ctx, streamKey(drillChannel), from, head.String()).Result()
	if err != nil {
		d.t.Fatalf("XRANGE: %v", err)
	}
	want := make([]backlog.ID, len(xs))
	for i, x := range xs {
		if want[i], err = backlog.ParseID(x.ID); err != nil {
			d.t.Fatal(err)
		}
	}
	for _, s := range d.subs {
		if err := s.check(want); err != nil {
			d.t.Fatalf("%s: subscriber %d: %v", name, s.n, err)
		}
	}
	d.checkedUpTo = head
	d.checked += len(want)
}

// head returns the stream's newest ID, retrying while Redis recovers.
func (d *drill) head() backlog.ID {
	d.t.Helper()
	for {
		xs, err := d.rdb.XRevRangeN(d.ctx, streamKey(drillChannel), "+", "-", 1).Result()
		if err == nil && len(xs) == 1 {
			id, err := backlog.ParseID(xs[0].ID)
			if err != nil {
				d.t.Fatal(err)
			}
			return id
		}
		if d.ctx.Err() != nil {
			d.t.Fatalf("the stream's head: %v %v", xs, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// markedDown returns a function checking that haproxy's health checks
// marked every running replica down in the public backend since, and up
// again: that the fault reached each replica's /readyz, and the balancer
// stopped sending it new clients meanwhile.
func (d *drill) markedDown(name string) func() {
	d.t.Helper()
	from := len(d.c.lb.out.String())
	return func() {
		d.t.Helper()
		down := map[string]bool{}
		for line := range strings.Lines(d.c.lb.out.String()[from:]) {
			if m := serverState.FindStringSubmatch(line); m != nil && m[1] == "tslm_public" && m[3] == "DOWN" {
				down[m[2]] = true
			}
		}
		if len(down) != len(d.c.running()) {
			d.t.Errorf("%s: haproxy marked %d servers of the public backend down (%v), want the %d running replicas", name, len(down), slices.Sorted(maps.Keys(down)), len(d.c.running()))
		}
	}
}

// downBeforeClosed checks the drain sequence of docs/deploy.md through the
// real balancer: once n is told to stop, haproxy marks it down in the
// public backend (its /readyz answers 503 "draining") before n closes any
// of its subscribers, so that those it closes reconnect to the others.
func (d *drill) downBeforeClosed(name string, n *node) {
	d.t.Helper()
	ip := n.ip.String()
	deadline := time.Now().Add(2 * drillDrainDelay)
	for {
		// Counted before the log is read: a close seen here happened
		// before the DOWN line was looked for.
		closed := 0
		for _, s := range d.subs {
			lost, _, _ := s.drillLost(name)
			closed += lost
		}
		addr := map[string]string{}
		for line := range strings.Lines(d.c.lb.out.String()) {
			if m := serverAddr.FindStringSubmatch(line); m != nil && m[1] == "tslm_public" {
				addr[m[2]] = m[4]
			}
			if m := serverState.FindStringSubmatch(line); m != nil && m[1] == "tslm_public" && m[3] == "DOWN" && addr[m[2]] == ip {
				if closed > 0 {
					d.t.Errorf("%s: %d subscribers were closed before haproxy marked %s down: the drain delay did not keep them until the balancer stopped sending clients there", name, closed, ip)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			d.t.Errorf("%s: haproxy did not mark %s down within %v of the stop signal", name, ip, 2*drillDrainDelay)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connections returns n's open public connections.
func (d *drill) connections(n *node) int {
	d.t.Helper()
	v, err := d.c.connections(n)
	if err != nil {
		d.t.Fatalf("metrics of %s: %v", n.ip, err)
	}
	return int(v)
}

// spread returns the public connections of each running replica.
func (d *drill) spread() map[string]int {
	out := map[string]int{}
	for _, n := range d.c.running() {
		v, err := d.c.connections(n)
		if err != nil {
			v = math.NaN()
		}
		out[n.ip.String()] = int(v)
	}
	return out
}

func (d *drill) logSpread(when string) {
	s := d.spread()
	var parts []string
	for _, ip := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, fmt.Sprintf("%s: %d", ip, s[ip]))
	}
	d.t.Logf("subscribers per replica %s: %s", when, strings.Join(parts, ", "))
}

// waitMoved waits (bounded) until k subscribers, and no others, lost
// their connection in the drill, each closed with code, and all of them
// received a message on their new connection.
func (d *drill) waitMoved(name string, k, code int) {
	d.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		lost, back := 0, 0
		codes := map[int]int{}
		for _, s := range d.subs {
			l, b, c := s.drillLost(name)
			lost, back = lost+l, back+b
			if l > 0 {
				codes[c]++
			}
		}
		if lost == k && back == k {
			if codes[code] != k {
				d.t.Errorf("%s: the %d subscribers that lost their connection saw close codes %v, want %d for each", name, k, codes, code)
			}
			return
		}
		if lost > k {
			d.t.Fatalf("%s: %d subscribers lost their connection, want the %d on the replica (close codes %v)", name, lost, k, codes)
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s: after 60s %d of the replica's %d subscribers lost their connection and %d are back (close codes %v); spread %v",
				name, lost, k, back, codes, d.spread())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noDisconnects checks that no subscriber lost its connection in the
// drill: faults of Redis do not reach connected subscribers.
func (d *drill) noDisconnects(name string) {
	d.t.Helper()
	lost := 0
	codes := map[int]int{}
	for _, s := range d.subs {
		if l, _, code := s.drillLost(name); l > 0 {
			lost++
			codes[code]++
		}
	}
	if lost > 0 {
		d.t.Errorf("%s: %d subscribers lost their connection (close codes %v), want none", name, lost, codes)
	}
}

// checkPublished checks that the stream holds every acknowledged publish
// once: the HTTP API's retries (with their idempotency key) and the
// direct publisher's (after looking for its entry) made no duplicate.
func (d *drill) checkPublished() {
	d.t.Helper()
	xs, err := d.rdb.XRange(d.ctx, streamKey(drillChannel), "-", "+").Result()
	if err != nil {
		d.t.Fatal(err)
	}
	seen := map[string]int{}
	for _, x := range xs {
		seen[fmt.Sprint(x.Values["data"])]++
	}
	for src, sent := range d.pubs.sent {
		for i := range sent.Load() {
			if c := seen[drillPayload(src, i)]; c != 1 {
				d.t.Errorf("%s message %d is in the stream %d times, want once", src, i, c)
			}
		}
	}
	if want := d.pubs.api.Load() + d.pubs.xadd.Load(); int64(len(xs)) != want {
		d.t.Errorf("the stream holds %d messages, want the %d acknowledged", len(xs), want)
	}
	if len(xs) != d.checked {
		d.t.Errorf("checked %d messages per subscriber, the stream holds %d", d.checked, len(xs))
	}
}

func (d *drill) logReports() {
	for _, name := range d.order {
		r := d.reports[name]
		codes := map[int]int{}
		var took, handshake []time.Duration
		for _, rc := range r.reconnects {
			codes[rc.code]++
			took = append(took, rc.took)
			handshake = append(handshake, rc.handshake)
		}
		line := fmt.Sprintf("drill %-22s %5.1fs, stream %5d messages; ", name, r.took.Seconds(), r.messages)
		if len(took) > 0 {
			line += fmt.Sprintf("%3d reconnected (close codes %v): first message after p50 %v p99 %v max %v (handshake done p50 %v p99 %v); ",
				len(took), codes, percentile(took, 0.50), percentile(took, 0.99), slices.Max(took).Round(time.Millisecond),
				percentile(handshake, 0.50), percentile(handshake, 0.99))
		} else {
			line += "no subscriber reconnected; "
		}
		if name != "final" { // the publishers stopped before it
			line += fmt.Sprintf("longest wait between messages p50 %v p99 %v; publish retries: API %d, XADD %d",
				percentile(r.stalls, 0.50), percentile(r.stalls, 0.99), r.apiRetries, r.xaddRetry)
		}
		d.t.Log(strings.TrimSuffix(line, "; "))
	}
}

// percentile returns the q-quantile of ds (nearest rank), rounded to
// the millisecond.
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := max(int(math.Ceil(q*float64(len(s))))-1, 0)
	return s[i].Round(time.Millisecond)
}

// closeAll closes every subscriber's client, all at once as a fleet of
// users would leave, and checks what their subscriptions reported.
func (d *drill) closeAll() {
	d.t.Helper()
	var wg sync.WaitGroup
	for _, s := range d.subs {
		wg.Go(func() { s.c.Close() })
	}
	wg.Wait()
	for _, s := range d.subs {
		select {
		case <-s.consumed:
		case <-time.After(10 * time.Second):
			d.t.Fatalf("subscriber %d: its events were not closed 10s after Close", s.n)
		}
		if err := s.c.Err(); !errors.Is(err, tslmclient.ErrClosed) {
			d.t.Errorf("subscriber %d stopped with %v, want ErrClosed", s.n, err)
		}
	}
}

// checkNoLeaks waits (bounded) until every running replica has no public
// connection left and about the goroutines it had idle, and the test
// process its goroutines from before the subscribers.
func (d *drill) checkNoLeaks(baseGoroutines, baseProcesses int) {
	d.t.Helper()
	// Per replica: its readers (started with the first subscription),
	// pooled Redis and keep-alive connections come and go.
	const replicaSlack = 25
	for _, n := range d.c.running() {
		var conns, goroutines float64
		var err error
		deadline := time.Now().Add(30 * time.Second)
		for {
			conns, err = d.c.connections(n)
			if err == nil {
				goroutines, err = scrape(n.apiURL(d.c), "go_goroutines")
			}
			if err == nil && conns == 0 && goroutines <= n.idleGoroutines+replicaSlack {
				break
			}
			if time.Now().After(deadline) {
				d.t.Fatalf("replica %s 30s after the subscribers left: %v public connections, %v goroutines (%v idle after start), %v",
					n.ip, conns, goroutines, n.idleGoroutines, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		d.t.Logf("replica %s: %v public connections, %v goroutines (%v idle after start)", n.ip, conns, goroutines, n.idleGoroutines)
	}
	// Each replica process started since has one goroutine of ours, which
	// reads its log until it exits.
	want := baseGoroutines + len(d.c.running()) - baseProcesses
	var now int
	deadline := time.Now().Add(30 * time.Second)
	for {
		http.DefaultClient.CloseIdleConnections()
		if now = runtime.NumGoroutine(); now <= want {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			d.t.Fatalf("test process: %d goroutines 30s after the subscribers left, want at most %d:\n%s", now, want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Logf("test process: %d goroutines, %d before the subscribers", now, baseGoroutines)
}

// subscribe dials the subscribers through haproxy's public frontend and
// subscribes each to the channel, live.
func (d *drill) subscribe() {
	d.t.Helper()
	for i := range drillClients {
		s := &drillSub{n: i, consumed: make(chan struct{})}
		ctx, cancel := context.WithTimeout(d.ctx, 20*time.Second)
		cl, err := tslmclient.Dial(ctx, d.c.lb.publicURL, tslmclient.WithLogger(slog.New(drillLog{s})))
		if err != nil {
			cancel()
			d.t.Fatalf("subscriber %d: dial through haproxy: %v", i, err)
		}
		s.c = cl
		d.subs = append(d.subs, s) // closed by closeAll, or at cleanup
		d.t.Cleanup(func() { cl.Close() })
		sub, err := cl.Subscribe(ctx, drillChannel, tslmclient.SubscribeOptions{})
		cancel()
		if err != nil {
			d.t.Fatalf("subscriber %d: subscribe: %v", i, err)
		}
		s.sub.Store(sub)
		go s.consume(sub)
	}
}

// drillSub is one subscriber: a tslmclient.Client with one subscription,
// whose events a goroutine checks and records as they come.
type drillSub struct {
	n        int
	c        *tslmclient.Client
	sub      atomic.Pointer[tslmclient.Subscription]
	consumed chan struct{} // closed when its events are

	mu        sync.Mutex
	unchecked []backlog.ID // received since the last checkpoint
	last      backlog.ID
	lastAt    time.Time
	problem   error // the first gap, resumed:false, duplicate or disorder
	drill     string
	stall     time.Duration // its longest wait between messages in drill
	// While its connection is lost: since when, in which drill, with
	// which close code, after which message.
	down      time.Time
	downDrill string
	downCode  int
	downAfter backlog.ID
	upAt      time.Time      // when the client logged its new connection
	lost      map[string]int // connections lost, by drill
	back      []reconnect
}

// reconnect is one lost connection, from its loss to the first message
// received on the next one (took), of which until the next connection's
// handshake was done (handshake).
type reconnect struct {
	drill     string
	code      int
	took      time.Duration
	handshake time.Duration
}

func (s *drillSub) begin(drill string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drill, s.stall = drill, 0
}

func (s *drillSub) consume(sub *tslmclient.Subscription) {
	defer close(s.consumed)
	for ev := range sub.Events() {
		now := time.Now()
		s.mu.Lock()
		switch ev := ev.(type) {
		case tslmclient.Message:
			id, err := backlog.ParseID(ev.ID)
			switch {
			case err != nil:
				s.fail(fmt.Errorf("message ID %q: %w", ev.ID, err))
			case !s.last.Less(id):
				s.fail(fmt.Errorf("message %s after %s: duplicate or out of order", id, s.last))
			default:
				s.unchecked = append(s.unchecked, id)
				s.last = id
			}
			if !s.lastAt.IsZero() {
				s.stall = max(s.stall, now.Sub(s.lastAt))
			}
			s.lastAt = now
			if !s.down.IsZero() && s.downAfter.Less(id) {
				r := reconnect{drill: s.downDrill, code: s.downCode, took: now.Sub(s.down)}
				if !s.upAt.IsZero() {
					r.handshake = s.upAt.Sub(s.down)
				}
				s.back = append(s.back, r)
				s.down, s.upAt = time.Time{}, time.Time{}
			}
		default:
			s.fail(fmt.Errorf("event %T %+v: nothing is lost in these drills", ev, ev))
		}
		s.mu.Unlock()
	}
}

func (s *drillSub) fail(err error) {
	if s.problem == nil {
		s.problem = err
	}
}

// disconnected records a lost connection, as the client logs it; the
// failed attempts of the same reconnection are not counted again.
func (s *drillSub) disconnected(at time.Time, code int) {
	after := backlog.Zero
	if sub := s.sub.Load(); sub != nil {
		// The last message the subscription handed on: the next
		// connection's first is the first after it.
		after, _ = backlog.ParseID(sub.LastID())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down.IsZero() {
		return
	}
	s.down, s.downDrill, s.downCode, s.downAfter = at, s.drill, code, after
	if s.lost == nil {
		s.lost = map[string]int{}
	}
	s.lost[s.drill]++
}

// reconnected records the client's new connection.
func (s *drillSub) reconnected(at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.down.IsZero() {
		s.upAt = at
	}
}

// position returns the last message received and, when its connection
// is lost, since when.
func (s *drillSub) position() (backlog.ID, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	state := "connected"
	if !s.down.IsZero() {
		state = fmt.Sprintf("disconnected for %v (code %d)", time.Since(s.down).Round(time.Millisecond), s.downCode)
	}
	return s.last, state
}

// check takes the messages up to want's last and compares them with want.
func (s *drillSub) check(want []backlog.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.problem != nil {
		return s.problem
	}
	if len(s.unchecked) < len(want) {
		return fmt.Errorf("received %d messages since the last check, the stream holds %d", len(s.unchecked), len(want))
	}
	for i, id := range want {
		if s.unchecked[i] != id {
			return fmt.Errorf("message #%d since the last check is %s, the stream's is %s", i, s.unchecked[i], id)
		}
	}
	s.unchecked = slices.Delete(s.unchecked, 0, len(want))
	return nil
}

// drillLost returns the connections lost in drill, how many of them were
// followed by a message on a new connection, and the last close code.
func (s *drillSub) drillLost(drill string) (lost, back, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.back {
		if r.drill == drill {
			back++
			code = r.code
		}
	}
	if !s.down.IsZero() && s.downDrill == drill {
		code = s.downCode
	}
	return s.lost[drill], back, code
}

func (s *drillSub) drillFigures(drill string) ([]reconnect, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []reconnect
	for _, r := range s.back {
		if r.drill == drill {
			out = append(out, r)
		}
	}
	return out, s.stall
}

// drillLog is the slog.Handler of a subscriber's client: the client logs
// "disconnected; reconnecting", with the close code in its error, before
// each attempt to reconnect, and "reconnected" once connected again. If
// these messages change, the drills that move subscribers fail, saying
// none lost its connection.
type drillLog struct{ s *drillSub }

const (
	clientDisconnected = "tslm client: disconnected; reconnecting"
	clientReconnected  = "tslm client: reconnected"
)

func (h drillLog) Enabled(context.Context, slog.Level) bool { return true }
func (h drillLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h drillLog) WithGroup(string) slog.Handler            { return h }

func (h drillLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == clientReconnected {
		h.s.reconnected(r.Time)
	}
	if r.Message != clientDisconnected {
		return nil
	}
	code := 0
	r.Attrs(func(a slog.Attr) bool {
		var de *tslmclient.DisconnectError
		if err, ok := a.Value.Any().(error); ok && errors.As(err, &de) {
			code = de.Code
		}
		return true
	})
	h.s.disconnected(r.Time, code)
	return nil
}

// drillPublishers publish to the channel until stopped, each at its pace,
// retrying every failure until it is known to have landed once: through
// haproxy's internal frontend with an idempotency key, and by XADD into
// Redis, looking for the entry before adding it again.
type drillPublishers struct {
	sent                    map[string]*atomic.Int64 // acknowledged, by publisher
	api, xadd               atomic.Int64             // acknowledged, by path
	apiRetries, xaddRetries atomic.Int64
	duplicates              atomic.Int64 // API retries answered "duplicate"
	apiLastErr, xaddLastErr atomic.Value // string
	stopping                chan struct{}
	wg                      sync.WaitGroup
	httpClient              *http.Client
	direct                  *redis.Client
	stopOnce                sync.Once
	apiURL                  string
	ctx                     context.Context
	t                       *testing.T
}

func drillPayload(src string, n int64) string { return fmt.Sprintf(`{"src":%q,"n":%d}`, src, n) }

func startDrillPublishers(ctx context.Context, t *testing.T, c *cluster) *drillPublishers {
	p := &drillPublishers{
		stopping:   make(chan struct{}),
		httpClient: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{}},
		// No retry of its own and a read timeout past the Redis pause:
		// an XADD whose outcome is unknown is looked for, never blindly
		// sent again.
		direct: redis.NewClient(&redis.Options{
			Addr: c.redis.Addr(), MaxRetries: -1, DialTimeout: time.Second,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		}),
		apiURL: c.lb.apiURL + "/v1/channels/" + drillChannel + "/messages",
		ctx:    ctx,
		t:      t,
	}
	p.sent = map[string]*atomic.Int64{}
	for i := range drillPerPath {
		for src, publish := range map[string]func(string, int64) error{"api": p.publishAPI, "xadd": p.publishDirect} {
			src = fmt.Sprint(src, i)
			p.sent[src] = new(atomic.Int64)
			p.wg.Go(func() { p.loop(src, publish) })
		}
	}
	t.Cleanup(p.stop)
	return p
}

func (p *drillPublishers) String() string {
	return fmt.Sprintf("API %d acknowledged (%d retries, last error %v), XADD %d (%d retries, last error %v)",
		p.api.Load(), p.apiRetries.Load(), p.apiLastErr.Load(), p.xadd.Load(), p.xaddRetries.Load(), p.xaddLastErr.Load())
}

func (p *drillPublishers) loop(src string, publish func(src string, n int64) error) {
	for n := int64(0); ; n++ {
		select {
		case <-p.stopping:
			return
		case <-time.After(drillEvery):
		}
		if err := publish(src, n); err != nil {
			// Only the test's end stops the retries: it fails for its
			// own reason (a publisher that never gets through fails the
			// drill it stalls).
			p.t.Logf("publisher %s: %v", src, err)
			return
		}
		p.sent[src].Add(1)
	}
}

// stop stops both publishers after their publish in flight.
func (p *drillPublishers) stop() {
	p.stopOnce.Do(func() {
		close(p.stopping)
		p.wg.Wait()
		p.httpClient.CloseIdleConnections()
		p.direct.Close()
	})
}

// retryWait waits before attempt n (from 1), or returns the context's
// error.
func (p *drillPublishers) retryWait(n int) error {
	select {
	case <-time.After(min(time.Duration(n)*50*time.Millisecond, time.Second)):
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

func (p *drillPublishers) publishAPI(src string, n int64) error {
	body := drillPayload(src, n)
	key := fmt.Sprintf("drill-%s-%d", src, n)
	for attempt := 1; ; attempt++ {
		status, err := p.postOnce(body, key)
		switch {
		case err == nil && status == http.StatusCreated:
			p.api.Add(1)
			return nil
		case err == nil && status == http.StatusOK: // a retry of one that landed
			p.duplicates.Add(1)
			p.api.Add(1)
			return nil
		case err == nil:
			err = fmt.Errorf("HTTP %d", status)
		}
		p.apiLastErr.Store(err.Error())
		p.apiRetries.Add(1)
		if err := p.retryWait(attempt); err != nil {
			return fmt.Errorf("API message %d after %d attempts: %w (last: %v)", n, attempt, err, p.apiLastErr.Load())
		}
	}
}

func (p *drillPublishers) postOnce(body, key string) (int, error) {
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, p.apiURL, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var out struct {
		ID string `json:"id"`
	}
	if resp.StatusCode/100 == 2 && (json.Unmarshal(b, &out) != nil || out.ID == "") {
		return 0, fmt.Errorf("HTTP %d without an id: %s", resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

func (p *drillPublishers) publishDirect(src string, n int64) error {
	payload := drillPayload(src, n)
	for attempt := 1; ; attempt++ {
		err := p.direct.Do(p.ctx, "XADD", streamKey(drillChannel), "MAXLEN", "~", "100000", "*", "data", payload).Err()
		if err == nil {
			p.xadd.Add(1)
			return nil
		}
		p.xaddLastErr.Store(err.Error())
		p.xaddRetries.Add(1)
		// The XADD may have landed with its answer lost: look for it
		// among the newest entries (the publishers are the only writers,
		// one message at a time each) before sending it again.
		for look := attempt; ; look++ {
			if err := p.retryWait(look); err != nil {
				return fmt.Errorf("XADD message %d after %d attempts: %w (last: %v)", n, attempt, err, p.xaddLastErr.Load())
			}
			xs, err := p.direct.XRevRangeN(p.ctx, streamKey(drillChannel), "+", "-", 500).Result()
			if err != nil {
				p.xaddLastErr.Store(err.Error())
				continue
			}
			for _, x := range xs {
				if x.Values["data"] == payload {
					p.xadd.Add(1)
					return nil
				}
			}
			break
		}
	}
}
