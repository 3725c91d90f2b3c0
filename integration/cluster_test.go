package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
)

// TestClusterEndToEnd runs two gateway binaries on a Redis Cluster of
// three masters, one started with each form of seeds URL, and one channel
// on each master. Subscribers on both gateways follow every channel while
// publishers write through both gateways' HTTP API and WebSocket and by
// plain XADD. Nothing is delivered by the safety poll (an hour): only
// notifications and the catch-ups they start. Then, publishing going on,
// one channel's slot moves to another master, a master hands over to its
// replica (CLUSTER FAILOVER) and another crashes (SIGKILL).
//
// After each: every publish acknowledged is in its stream once (a publish
// answered 503 is retried with its idempotency key), save what the crashed
// master had not passed on; every subscriber received exactly its
// channels' streams, once, in order, with a gap frame only right after
// entries the crash lost; a subscriber that left during the move or the
// handover resumes on the other gateway with resumed:true and exactly what
// followed. At the end both gateways are ready, each holds one pub/sub
// connection per master it follows channels on, and one subscription per
// channel.
func TestClusterEndToEnd(t *testing.T) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
	defer cancel()
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	rdb := c.Client()
	t.Logf("cluster up in %v", time.Since(began).Round(time.Millisecond))

	urls := []string{c.URL(), "redis://" + strings.Join(c.Addrs(), ",") + "/0"}
	var gws []*replica
	var procs []*process
	for _, u := range urls {
		p := startBinary(t, map[string]string{"TSLM_REDIS_URL": u, "TSLM_POLL_INTERVAL": "1h"})
		in := p.addr(t, "internal")
		gws = append(gws, &replica{publicURL: "ws://" + p.addr(t, "public") + "/v1/ws", internalURL: "ws://" + in + "/v1/ws", apiURL: "http://" + in})
		checkClusterLogged(t, p, c)
		procs = append(procs, p)
	}

	// One channel on each master, in a fixed order.
	var chans []string
	home := map[*redistest.Server]string{}
	for i := 0; len(home) < 3 && i < 1000; i++ {
		name := fmt.Sprintf("e2e%d", i)
		if m := c.MasterOf(c.Slot(streamKey(name))); home[m] == "" {
			home[m] = name
			chans = append(chans, name)
		}
	}
	if len(chans) != 3 {
		t.Fatalf("channels on %d masters, want 3", len(chans))
	}
	for _, ch := range chans {
		gws[0].create(t, ch, nil)
	}
	// Two subscribers on each gateway, each following every channel.
	var subs []*clusterSub
	for _, g := range gws {
		for range 2 {
			subs = append(subs, startClusterSub(t, ctx, g.publicURL, chans, ""))
		}
	}

	// Registered after the subscribers' cleanups, so that it runs while
	// they are still connected.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// Where each gateway's followers are subscribed, and what they
		// logged.
		for _, n := range c.Nodes() {
			if !n.Running() {
				continue
			}
			for _, ch := range chans {
				res, err := n.Client().Do(context.Background(), "PUBSUB", "SHARDNUMSUB", "tslm:n:{"+ch+"}").Slice()
				t.Logf("%s: PUBSUB SHARDNUMSUB %s: %v %v", n.Addr(), ch, res, err)
			}
			list, err := n.Client().Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
			t.Logf("%s: CLIENT LIST TYPE pubsub: %s %v", n.Addr(), list, err)
		}
		for i, p := range procs {
			t.Logf("gateway %d (%s):\n%s", i, urls[i], p.output())
		}
	})

	ck := &clusterCheck{t: t, ctx: ctx, rdb: rdb, gws: gws, chans: chans, subs: subs, gapsOK: map[string]bool{}, lostOK: map[string]bool{}}

	// Before any fault: the baseline.
	ck.phase("baseline", nil, "")

	// (a) A channel's slot moves to another master, half-way first
	// (TRYAGAIN), then every key moved but the slot not handed over
	// (ASK), then done. A subscriber leaves half-way.
	moving := chans[0]
	slot := c.Slot(streamKey(moving))
	from := c.MasterOf(slot)
	to := c.Masters()[0]
	if to == from {
		to = c.Masters()[1]
	}
	ck.phase("slot move", func(pubs *clusterPubs) (string, *clusterSub) {
		leaver := startClusterSub(t, ctx, gws[0].publicURL, []string{moving}, "")
		leaver.waitMessages(t, moving, 3)
		move := c.BeginSlotMove(slot, to)
		pubs.waitTries(t, 10)
		if n := move.MigrateKeys(1); n != 1 {
			t.Fatalf("migrated %d keys, want 1", n)
		}
		pubs.waitTries(t, 10)
		last := leaver.close(moving)
		move.MigrateKeys(0)
		pubs.waitTries(t, 10)
		move.Finish()
		if got := c.MasterOf(slot); got != to {
			t.Fatalf("slot %d is on %s after the move, want %s", slot, got.Addr(), to.Addr())
		}
		return last, startClusterSub(t, ctx, gws[1].publicURL, []string{moving}, last)
	}, moving)

	// (b) The master now serving two channels, the moved one too, hands
	// over to its replica. A subscriber leaves as it starts.
	handing := to
	var handed []string
	for _, ch := range chans {
		if c.MasterOf(c.Slot(streamKey(ch))) == handing {
			handed = append(handed, ch)
		}
	}
	if len(handed) != 2 {
		t.Fatalf("%s serves %v, want two channels", handing.Addr(), handed)
	}
	ck.phase("graceful failover", func(pubs *clusterPubs) (string, *clusterSub) {
		leaver := startClusterSub(t, ctx, gws[1].publicURL, []string{handed[1]}, "")
		leaver.waitMessages(t, handed[1], 3)
		last := leaver.close(handed[1])
		promoted := c.Failover(handing)
		if got := c.MasterOf(c.Slot(streamKey(handed[1]))); got != promoted {
			t.Fatalf("%s is on %s after the failover, want %s", handed[1], got.Addr(), promoted.Addr())
		}
		return last, startClusterSub(t, ctx, gws[0].publicURL, []string{handed[1]}, last)
	}, handed[1])

	// (c) The master of the third channel, untouched so far, crashes
	// after acknowledging entries its replica never got: the replica is
	// frozen and its link cut, some publishes are acknowledged, the master
	// is killed and the replica thawed and elected. Subscribers received
	// the lost entries, so each must get a gap after them.
	var victimCh string
	for _, ch := range chans {
		if !slices.Contains(handed, ch) {
			victimCh = ch
		}
	}
	victimSlot := c.Slot(streamKey(victimCh))
	victim := c.MasterOf(victimSlot)
	ck.gapsOK[victimCh] = true
	ck.phase("master crash", func(pubs *clusterPubs) (string, *clusterSub) {
		ck.lostOK[victimCh] = true
		heir := c.ReplicaOf(victim)
		thaw := heir.Hang()
		if err := victim.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
			t.Fatalf("CLIENT KILL TYPE replica: %v", err)
		}
		pubs.waitAckedOn(t, victimCh, 3)
		victim.Kill()
		thaw()
		// Not KillMaster, which looks for the replica to wait for
		// after the kill, when the frozen one may be flagged failed.
		eventually(t, 30*time.Second, heir.Addr()+" not promoted", func() bool {
			return slices.Contains(c.Masters(), heir)
		})
		c.WaitHealthy()
		if got := c.MasterOf(victimSlot); got != heir {
			t.Fatalf("%s is on %s after the crash, want %s", victimCh, got.Addr(), heir.Addr())
		}
		return "", nil
	}, "")
	if ck.lostAcked == 0 {
		t.Errorf("the crash lost no acknowledged publish: the test did not lose what it meant to")
	}
	for i, s := range subs {
		if s.lostSeen == 0 || s.gapsSeen == 0 {
			t.Errorf("subscriber %d received %d lost entries and %d gaps, want some of both", i, s.lostSeen, s.gapsSeen)
		}
	}

	for i, g := range gws {
		eventually(t, 15*time.Second, fmt.Sprintf("gateway %d: /readyz not 200 at the end", i), func() bool {
			return httpStatus(http.MethodGet, g.apiURL+"/readyz", "") == http.StatusOK
		})
		checkClusterMetrics(t, g, len(subs)/len(gws))
	}
	checkShardSubscriptions(t, ctx, c, chans, len(gws))
	var lost, gaps int
	for _, s := range subs {
		lost += s.lostSeen
		gaps += s.gapsSeen
	}
	t.Logf("done in %v: %d messages acknowledged, %d publishes retried; the crash lost %d acknowledged, subscribers saw %d lost entries and %d gaps",
		time.Since(began).Round(time.Millisecond), ck.acked, ck.retried, ck.lostAcked, lost, gaps)
}

// checkClusterLogged: the start-up line names the Cluster's seeds.
func checkClusterLogged(t *testing.T, p *process, c *redistest.Cluster) {
	t.Helper()
	eventually(t, 10*time.Second, "no 'using the Redis backlog' line naming the Cluster's seeds:\n"+p.output(), func() bool {
		for _, l := range p.logLines() {
			seeds, _ := l["cluster_seeds"].([]any)
			var got []string
			for _, s := range seeds {
				got = append(got, fmt.Sprint(s))
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(c.Addrs()))
			if l["msg"] == "using the Redis backlog" && slices.Equal(got, want) {
				return true
			}
		}
		return false
	})
}

// clusterCheck runs the phases of TestClusterEndToEnd and keeps what they
// learned.
type clusterCheck struct {
	t      *testing.T
	ctx    context.Context
	rdb    *redis.ClusterClient
	gws    []*replica
	chans  []string
	subs   []*clusterSub
	gapsOK map[string]bool // channels whose subscribers may have had a gap
	lostOK map[string]bool // channels that may have lost acknowledged entries
	n      int

	acked, retried, lostAcked int
}

// phase publishes on every channel, runs fault (nil: none) and publishes
// on until every publisher was acknowledged again after it, then stops
// publishing and checks the streams and subscribers. fault may return a
// subscriber resumed after it with since = last, which must then receive
// exactly what channel's stream holds after last.
func (ck *clusterCheck) phase(name string, fault func(*clusterPubs) (last string, resumed *clusterSub), channel string) {
	t := ck.t
	t.Helper()
	began := time.Now()
	ck.n++
	pubs := startClusterPubs(ck.ctx, ck.rdb, ck.gws, ck.chans, ck.n)
	pubs.waitAcked(t, 5)
	var last string
	var resumed *clusterSub
	if fault != nil {
		last, resumed = fault(pubs)
		faultDone := time.Now()
		if resumed != nil {
			ack := resumed.ack(t, channel)
			if ack["resumed"] != true {
				t.Fatalf("%s: resuming %s after %s: ack %v, want resumed:true", name, channel, last, ack)
			}
		}
		pubs.waitAcked(t, 5)
		t.Logf("%s: the fault took %v", name, faultDone.Sub(began).Round(time.Millisecond))
	}
	stats := pubs.halt(t)
	t.Logf("%s: %s", name, stats)
	for _, p := range pubs.all {
		ck.retried += p.retries
	}

	// A publish through a gateway after the plain XADDs: its notification
	// does not follow its subscribers' cursors, which makes the gateways
	// catch up and deliver those XADDs (the poll would only in an hour).
	flush := map[string]string{}
	for _, ch := range ck.chans {
		flush[ch] = publishOnce(t, ck.gws[0], ch, fmt.Sprintf(`"flush %d"`, ck.n), fmt.Sprintf("flush-%s-%d", ch, ck.n))
	}

	for _, ch := range ck.chans {
		entries, err := ck.rdb.XRange(ck.ctx, streamKey(ch), "-", "+").Result()
		if err != nil {
			t.Fatalf("%s: XRANGE %s: %v", name, ch, err)
		}
		if entries[len(entries)-1].ID != flush[ch] {
			t.Fatalf("%s: %s ends with %s, want the flush %s", name, ch, entries[len(entries)-1].ID, flush[ch])
		}
		ids := make([]string, len(entries))
		for i, e := range entries {
			ids[i] = e.ID
		}
		ck.checkStored(name, ch, entries, pubs)
		for i, s := range ck.subs {
			s.check(t, fmt.Sprintf("%s: subscriber %d, %s", name, i, ch), ch, ids, ck.gapsOK[ch])
		}
		if resumed != nil && ch == channel {
			at := slices.Index(ids, last)
			if at < 0 {
				t.Fatalf("%s: %s, where a subscriber resumed from, is not in the stream", name, last)
			}
			resumed.check(t, name+": the subscriber resumed after "+last, ch, ids[at+1:], false)
			resumed.conn.Close()
		}
	}
	t.Logf("%s: checked in %v", name, time.Since(began).Round(time.Millisecond))
}

// checkStored compares ch's entries with its publishers' acknowledgements:
// every acknowledged ID holds its key once; every key held through a
// gateway was acknowledged, with that ID.
func (ck *clusterCheck) checkStored(phase, ch string, entries []redis.XMessage, pubs *clusterPubs) {
	t := ck.t
	t.Helper()
	held := map[string][]string{} // key → IDs
	for _, e := range entries {
		data, _ := e.Values["data"].(string)
		var key string
		if json.Unmarshal([]byte(data), &key) == nil {
			held[key] = append(held[key], e.ID)
		}
	}
	for _, p := range pubs.of[ch] {
		p.mu.Lock()
		acked := p.acked
		p.mu.Unlock()
		ck.acked += len(acked)
		for key, id := range acked {
			ids := held[key]
			switch {
			case len(ids) == 0 && ck.lostOK[ch]:
				ck.lostAcked++
			case len(ids) == 0:
				t.Errorf("%s: %s acknowledged %s as %s, not in the stream", phase, p.name, key, id)
			case p.keyed && (len(ids) != 1 || ids[0] != id):
				t.Errorf("%s: %s acknowledged %s as %s, stored as %v", phase, p.name, key, id, ids)
			case !p.keyed && !slices.Contains(ids, id):
				t.Errorf("%s: %s XADDed %s as %s, stored as %v", phase, p.name, key, id, ids)
			}
		}
		if p.keyed {
			prefix := p.name + "/"
			for key, ids := range held {
				if _, ok := acked[key]; strings.HasPrefix(key, prefix) && !ok {
					t.Errorf("%s: %s stored as %v, never acknowledged", phase, key, ids)
				}
			}
		}
	}
}

// clusterSub is a WebSocket subscriber that records, per channel, the
// messages and gaps it receives, in order, on its own goroutine.
type clusterSub struct {
	conn *websocket.Conn
	done chan struct{}

	mu     sync.Mutex
	events map[string][]subEvent
	acks   map[string]map[string]any // by channel
	odd    []string                  // frames of any other kind
	err    error                     // what ended the reading

	lostSeen, gapsSeen int // the test goroutine's, from check
}

type subEvent struct {
	id  string // a message's ID, or a gap's after
	gap bool
}

// startClusterSub subscribes to chans on url, after since if not empty.
func startClusterSub(t *testing.T, ctx context.Context, url string, chans []string, since string) *clusterSub {
	t.Helper()
	conn, err := dialConn(ctx, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	s := &clusterSub{conn: conn, done: make(chan struct{}), events: map[string][]subEvent{}, acks: map[string]map[string]any{}}
	t.Cleanup(func() { conn.Close(); <-s.done })
	go s.read()
	for _, ch := range chans {
		f := map[string]any{"type": "subscribe", "ref": "sub-" + ch, "channel": ch}
		if since != "" {
			f["since"] = since
		}
		conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := conn.WriteJSON(f); err != nil {
			t.Fatalf("subscribe %s: %v", ch, err)
		}
	}
	for _, ch := range chans {
		if ack := s.ack(t, ch); ack["type"] != "ack" {
			t.Fatalf("subscribe %s on %s: %v", ch, url, ack)
		}
	}
	return s
}

func (s *clusterSub) read() {
	defer close(s.done)
	for {
		var f map[string]any
		if err := s.conn.ReadJSON(&f); err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		ch, _ := f["channel"].(string)
		s.mu.Lock()
		switch f["type"] {
		case "message":
			s.events[ch] = append(s.events[ch], subEvent{id: fmt.Sprint(f["id"])})
		case "gap":
			s.events[ch] = append(s.events[ch], subEvent{id: fmt.Sprint(f["after"]), gap: true})
		case "ack":
			if ref, _ := f["ref"].(string); strings.HasPrefix(ref, "sub-") {
				s.acks[strings.TrimPrefix(ref, "sub-")] = f
				break
			}
			fallthrough
		default:
			b, _ := json.Marshal(f)
			s.odd = append(s.odd, string(b))
			if ref, _ := f["ref"].(string); strings.HasPrefix(ref, "sub-") {
				s.acks[strings.TrimPrefix(ref, "sub-")] = f
			}
		}
		s.mu.Unlock()
	}
}

// ack waits for the answer to the subscription to ch.
func (s *clusterSub) ack(t *testing.T, ch string) map[string]any {
	t.Helper()
	var ack map[string]any
	eventually(t, 10*time.Second, "no answer to subscribe "+ch, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		ack = s.acks[ch]
		return ack != nil || s.err != nil
	})
	if ack == nil {
		t.Fatalf("subscribe %s: the connection ended: %v", ch, s.err)
	}
	return ack
}

func (s *clusterSub) waitMessages(t *testing.T, ch string, n int) {
	t.Helper()
	eventually(t, 15*time.Second, fmt.Sprintf("fewer than %d messages of %s", n, ch), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.events[ch]) >= n
	})
}

// close disconnects and returns the last message ID of ch received.
func (s *clusterSub) close(ch string) string {
	s.conn.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	evs := s.events[ch]
	for i := len(evs) - 1; i >= 0; i-- {
		if !evs[i].gap {
			return evs[i].id
		}
	}
	return ""
}

// check waits until the subscriber received the last of want, then
// compares: its messages of ch are want, once, in order. With gapsOK,
// messages not in want may precede a gap frame after the last of them
// (entries a crashed master lost after they were delivered); no other gap
// may come.
func (s *clusterSub) check(t *testing.T, what, ch string, want []string, gapsOK bool) {
	t.Helper()
	wanted := make(map[string]bool, len(want))
	for _, id := range want {
		wanted[id] = true
	}
	// Generous: after a crash the follower re-subscribes only once the
	// gateway's slot map names the promoted replica (a reload every 2s)
	// and its own backoff lets it try again, which a loaded machine
	// stretches (15s may have been what failed one loaded run in about
	// 20, whose message was not kept).
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		evs, odd, err := slices.Clone(s.events[ch]), slices.Clone(s.odd), s.err
		s.mu.Unlock()
		if len(odd) > 0 {
			t.Fatalf("%s: unexpected frames %v", what, odd)
		}
		if len(want) == 0 || slices.ContainsFunc(evs, func(e subEvent) bool { return !e.gap && e.id == want[len(want)-1] }) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("%s: %d frames, not the last of the %d entries %s (connection: %v)\ngot  %v\nwant %v", what, len(evs), len(want), want[len(want)-1], err, evs, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	evs := slices.Clone(s.events[ch])
	s.mu.Unlock()

	var got []string
	lastSent, lost := "", false // lost: lastSent is not in want
	for i, e := range evs {
		switch {
		case e.gap && (!gapsOK || !lost || e.id != lastSent):
			t.Fatalf("%s: frame %d, a gap after %s, follows %s (lost %v, gaps allowed %v): %v", what, i, e.id, lastSent, lost, gapsOK, evs)
		case e.gap:
			s.gapsSeen++
			lost = false
		case !wanted[e.id] && !gapsOK:
			t.Fatalf("%s: frame %d, message %s, is not in the stream: %v", what, i, e.id, evs)
		case !wanted[e.id]:
			s.lostSeen++
			lastSent, lost = e.id, true
		default:
			if lost {
				t.Fatalf("%s: frame %d, message %s, follows the lost %s with no gap between: %v", what, i, e.id, lastSent, evs)
			}
			got = append(got, e.id)
			lastSent = e.id
		}
	}
	sameIDs(t, what, got, want)
}

// clusterPub is one publisher on one channel. Keyed publishers go through
// a gateway with an idempotency key and retry a publish answered
// unavailable until it is acknowledged; the plain XADD does not retry.
type clusterPub struct {
	name    string // also the prefix of its keys
	channel string
	keyed   bool
	publish func(ctx context.Context, key string) (id string, retry bool, err error)

	mu      sync.Mutex
	acked   map[string]string // key → ID
	tries   int
	retries int
	lastErr error
	fatal   error
}

type clusterPubs struct {
	of     map[string][]*clusterPub // by channel
	all    []*clusterPub
	cancel context.CancelFunc
	stop   chan struct{}
	wg     sync.WaitGroup
}

// startClusterPubs publishes to every channel through each gateway's HTTP
// API and WebSocket, and by XADD, until halted; keys name the phase.
func startClusterPubs(ctx context.Context, rdb *redis.ClusterClient, gws []*replica, chans []string, phase int) *clusterPubs {
	ctx, cancel := context.WithCancel(ctx)
	ps := &clusterPubs{of: map[string][]*clusterPub{}, cancel: cancel, stop: make(chan struct{})}
	for _, ch := range chans {
		add := func(name string, keyed bool, publish func(ctx context.Context, key string) (string, bool, error)) {
			p := &clusterPub{name: fmt.Sprintf("%s/%d/%s", ch, phase, name), channel: ch, keyed: keyed, publish: publish, acked: map[string]string{}}
			ps.of[ch] = append(ps.of[ch], p)
			ps.all = append(ps.all, p)
		}
		for i, g := range gws {
			add(fmt.Sprintf("http%d", i), true, func(ctx context.Context, key string) (string, bool, error) {
				return httpPublishKeyed(ctx, g.apiURL, ch, key)
			})
			ws := &wsPublisher{url: g.internalURL}
			add(fmt.Sprintf("ws%d", i), true, func(ctx context.Context, key string) (string, bool, error) {
				return ws.publish(ctx, ch, key)
			})
		}
		add("xadd", false, func(ctx context.Context, key string) (string, bool, error) {
			b, _ := json.Marshal(key)
			xctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			id, err := rdb.Do(xctx, "XADD", streamKey(ch), "MAXLEN", "~", "10000", "*", "data", string(b)).Text()
			return id, false, err
		})
	}
	for _, p := range ps.all {
		ps.wg.Go(func() { p.run(ctx, ps.stop) })
	}
	return ps
}

func (p *clusterPub) run(ctx context.Context, stop chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		key := fmt.Sprintf("%s/%d", p.name, i)
		// A keyed publish is retried even after stop: it may have been
		// stored, and the check wants it acknowledged.
		for {
			id, retry, err := p.publish(ctx, key)
			p.mu.Lock()
			p.tries++
			switch {
			case err == nil:
				p.acked[key] = id
			case retry && p.keyed:
				p.retries++
				p.lastErr = err
			case p.keyed:
				p.fatal = fmt.Errorf("%s: %w", key, err)
			default:
				p.lastErr = err
			}
			p.mu.Unlock()
			if err == nil || !retry || !p.keyed || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if p.fatal != nil {
			return
		}
	}
}

func (ps *clusterPubs) counts() (tries, acked int, fatal error) {
	for _, p := range ps.all {
		p.mu.Lock()
		tries += p.tries
		acked += len(p.acked)
		if fatal == nil {
			fatal = p.fatal
		}
		p.mu.Unlock()
	}
	return tries, acked, fatal
}

// waitAcked waits until every publisher has n more acknowledgements.
func (ps *clusterPubs) waitAcked(t *testing.T, n int) {
	t.Helper()
	from := map[*clusterPub]int{}
	for _, p := range ps.all {
		p.mu.Lock()
		from[p] = len(p.acked)
		p.mu.Unlock()
	}
	eventually(t, 30*time.Second, fmt.Sprintf("a publisher short of %d more acknowledgements: %s", n, ps), func() bool {
		if _, _, err := ps.counts(); err != nil {
			t.Fatalf("publisher: %v", err)
		}
		for _, p := range ps.all {
			p.mu.Lock()
			short := len(p.acked) < from[p]+n
			p.mu.Unlock()
			if short {
				return false
			}
		}
		return true
	})
}

// waitAckedOn waits until every publisher to ch has n more
// acknowledgements.
func (ps *clusterPubs) waitAckedOn(t *testing.T, ch string, n int) {
	t.Helper()
	(&clusterPubs{all: ps.of[ch]}).waitAcked(t, n)
}

// waitTries waits until the publishers made n more attempts in all.
func (ps *clusterPubs) waitTries(t *testing.T, n int) {
	t.Helper()
	from, _, _ := ps.counts()
	eventually(t, 30*time.Second, fmt.Sprintf("fewer than %d more publish attempts", n), func() bool {
		tries, _, _ := ps.counts()
		return tries >= from+n
	})
}

func (ps *clusterPubs) String() string {
	var parts []string
	for _, p := range ps.all {
		p.mu.Lock()
		parts = append(parts, fmt.Sprintf("%s: %d acked of %d tries, %d retried (last error: %v)", p.name, len(p.acked), p.tries, p.retries, p.lastErr))
		p.mu.Unlock()
	}
	return strings.Join(parts, "; ")
}

// halt stops the publishers, letting each finish the publish it is
// retrying, and reports them.
func (ps *clusterPubs) halt(t *testing.T) string {
	t.Helper()
	close(ps.stop)
	done := make(chan struct{})
	go func() { ps.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		ps.cancel()
		<-done
		t.Fatalf("publishers still retrying 30s after the stop: %s", ps)
	}
	ps.cancel()
	if _, _, err := ps.counts(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	var tries, acked, retries int
	for _, p := range ps.all {
		tries += p.tries
		acked += len(p.acked)
		retries += p.retries
	}
	return fmt.Sprintf("%d publishes acknowledged of %d tries, %d retried", acked, tries, retries)
}

// httpPublishKeyed publishes key's JSON string with key as its
// Idempotency-Key; retry says whether the answer was 503 or the request
// failed (the gateway may have stored it).
func httpPublishKeyed(ctx context.Context, apiURL, channel, key string) (string, bool, error) {
	b, _ := json.Marshal(key)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/v1/channels/"+channel+"/messages", strings.NewReader(string(b)))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", true, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct{ ID string }
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		return "", true, fmt.Errorf("publish: %d %s", resp.StatusCode, body)
	case resp.StatusCode/100 != 2 || json.Unmarshal(body, &out) != nil || out.ID == "":
		return "", false, fmt.Errorf("publish: %d %s", resp.StatusCode, body)
	}
	return out.ID, false, nil
}

// wsPublisher publishes over one internal-listener connection, dialed
// again after it breaks.
type wsPublisher struct {
	url  string
	conn *websocket.Conn
}

func (w *wsPublisher) publish(ctx context.Context, channel, key string) (string, bool, error) {
	if w.conn == nil {
		conn, err := dialConn(ctx, w.url)
		if err != nil {
			return "", true, err
		}
		w.conn = conn
	}
	fail := func(err error) (string, bool, error) {
		w.conn.Close()
		w.conn = nil
		return "", true, err
	}
	w.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := w.conn.WriteJSON(map[string]any{"type": "publish", "ref": key, "channel": channel, "data": key, "idempotency_key": key}); err != nil {
		return fail(err)
	}
	var f frame
	w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := w.conn.ReadJSON(&f); err != nil {
		return fail(err)
	}
	switch {
	case f.Ref != key:
		return fail(fmt.Errorf("publish %s answered %+v", key, f))
	case f.Type == "error" && f.Code == "unavailable":
		return "", true, fmt.Errorf("publish: %+v", f)
	case f.Type != "ack" || f.ID == "":
		return "", false, fmt.Errorf("publish %s answered %+v", key, f)
	}
	return f.ID, false, nil
}

// checkClusterMetrics: the gateway's Redis pools are small and its
// connection and subscription gauges count the test's subscribers.
func checkClusterMetrics(t *testing.T, g *replica, subscribers int) {
	t.Helper()
	resp, err := http.Get(g.apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := readAll(t, resp)
	value := func(series string) float64 {
		for line := range strings.Lines(body) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("metric %s: %q: %v", series, v, err)
				}
				return f
			}
		}
		t.Fatalf("no metric %s in:\n%s", series, body)
		return 0
	}
	for _, pool := range []string{"client", "writer"} {
		if n := value(`tslm_redis_pool_connections{pool="` + pool + `"}`); n < 1 || n > 50 {
			t.Errorf("%s: %v connections in the %s pool, want 1..50", g.apiURL, n, pool)
		}
		if n := value(`tslm_redis_pool_timeouts_total{pool="` + pool + `"}`); n != 0 {
			t.Errorf("%s: %v timeouts waiting for the %s pool", g.apiURL, n, pool)
		}
	}
	// The resumed subscribers closed their connections a moment ago.
	eventually(t, 10*time.Second, fmt.Sprintf("%s: public connections not the %d subscribers", g.apiURL, subscribers), func() bool {
		return g.metric(t, `tslm_connections{listener="public"}`) == float64(subscribers)
	})
	if n := value("tslm_channels_followed"); n != 3 {
		t.Errorf("%s: %v channels followed, want 3", g.apiURL, n)
	}
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "tslm_redis_errors_total") || strings.HasPrefix(line, "tslm_redis_pool") {
			t.Logf("%s %s", g.apiURL, strings.TrimSpace(line))
		}
	}
}

var ssubField = regexp.MustCompile(`\bssub=(\d+)`)

// checkShardSubscriptions: across the running nodes, each channel's
// notifications have one subscription per gateway, and no node holds more
// than one pub/sub connection with shard subscriptions per gateway.
func checkShardSubscriptions(t *testing.T, ctx context.Context, c *redistest.Cluster, chans []string, gateways int) {
	t.Helper()
	eventually(t, 15*time.Second, "stale shard subscriptions", func() bool {
		for _, ch := range chans {
			total := 0
			for _, n := range c.Nodes() {
				if !n.Running() {
					continue // the crashed master
				}
				res, err := n.Client().Do(ctx, "PUBSUB", "SHARDNUMSUB", "tslm:n:{"+ch+"}").Slice()
				if err != nil {
					t.Fatalf("PUBSUB SHARDNUMSUB on %s: %v", n.Addr(), err)
				}
				if len(res) == 2 {
					total += int(res[1].(int64))
				}
			}
			if total != gateways {
				t.Logf("%s: %d subscriptions to its notifications, want %d", ch, total, gateways)
				return false
			}
		}
		return true
	})
	for _, n := range c.Nodes() {
		if !n.Running() {
			continue
		}
		list, err := n.Client().Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			t.Fatalf("CLIENT LIST on %s: %v", n.Addr(), err)
		}
		conns := 0
		for line := range strings.Lines(list) {
			if m := ssubField.FindStringSubmatch(line); m != nil && m[1] != "0" {
				conns++
			}
		}
		t.Logf("%s: %d pub/sub connections with shard subscriptions", n.Addr(), conns)
		if conns > gateways {
			t.Errorf("%s holds %d pub/sub connections with shard subscriptions, want at most one per gateway:\n%s", n.Addr(), conns, list)
		}
	}
}
