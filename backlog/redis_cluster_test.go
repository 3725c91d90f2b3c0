package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/backlog/backlogtest"
	"github.com/tslm/tslm/internal/redistest"
)

// TestRedisCluster runs the Redis backlog against one 3-master cluster
// (started once: six processes), everything but Read, which is not
// there yet on a Cluster. The subtests that fail a master over or move a
// slot come last.
func TestRedisCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	client, err := backlog.NewRedisClient(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	newLog := func(t *testing.T, cfg backlog.RedisConfig) *backlog.Redis {
		t.Helper()
		if cfg.KeyPrefix == "" {
			cfg.KeyPrefix = fmt.Sprintf("ctest%d:", prefixSeq.Add(1))
		}
		r := backlog.NewRedis(client, cfg)
		t.Cleanup(func() { r.Close() })
		return r
	}

	t.Run("SeedsInOneHost", func(t *testing.T) {
		// The comma-separated form reaches the same cluster.
		cl, err := backlog.NewRedisClient("redis://" + strings.Join(c.Addrs(), ",") + "/0")
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx := testContext(t)
		if err := cl.Set(ctx, "seeds", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if n := cl.(*redis.ClusterClient).PoolStats().TotalConns; n < 1 {
			t.Errorf("%d connections after a command", n)
		}
	})
	t.Run("SlotOfMatchesRedis", func(t *testing.T) {
		ctx := testContext(t)
		for _, ch := range []string{"a", "moving", "orders.eu-1", "x:y_z", "123456789"} {
			want, err := client.ClusterKeySlot(ctx, "tslm:n:{"+ch+"}").Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := backlog.SlotOf(ch); got != int(want) {
				t.Errorf("slot of %s = %d, Redis says %d", ch, got, want)
			}
		}
	})
	t.Run("Conformance", func(t *testing.T) {
		backlogtest.Run(t, func(t *testing.T) backlog.Log {
			return newLog(t, backlog.RedisConfig{})
		})
	})
	t.Run("ChannelLimit", func(t *testing.T) {
		backlogtest.RunLimit(t, func(t *testing.T, maxChannels int) backlog.Log {
			return newLog(t, backlog.RedisConfig{MaxChannels: maxChannels})
		})
	})
	t.Run("Requests", func(t *testing.T) {
		backlogtest.RunRequests(t, func(t *testing.T, opts backlogtest.RequestsOptions) backlogtest.RequestLog {
			return newLog(t, backlog.RedisConfig{MaxRequests: opts.MaxRequests, Now: opts.Now})
		})
	})
	t.Run("ChannelsSpreadOverMasters", func(t *testing.T) {
		testClusterSpread(t, c, newLog(t, backlog.RedisConfig{KeyPrefix: "spread:"}), "spread:")
	})
	t.Run("ClaimBlocksOnEachMaster", func(t *testing.T) {
		testClusterClaim(t, c, client, newLog(t, backlog.RedisConfig{KeyPrefix: "claim:"}), "claim:")
	})
	t.Run("FunctionOnEachMaster", func(t *testing.T) {
		testClusterFunction(t, c, client, newLog(t, backlog.RedisConfig{KeyPrefix: "fn:", PollInterval: time.Hour}), "fn:")
	})
	t.Run("AppendIsNotRetriedAfterItRan", func(t *testing.T) {
		testClusterNotRetried(t, c)
	})
	t.Run("SlotMoveWhileAppending", func(t *testing.T) {
		testClusterSlotMove(t, c, client, newLog(t, backlog.RedisConfig{KeyPrefix: "move:"}), "move:")
	})
	t.Run("SlotMoveResubscribesEveryFollower", func(t *testing.T) {
		testClusterSlotMoveFollowers(t, c, "resub:")
	})
	t.Run("FailoverWhileAppending", func(t *testing.T) {
		testClusterFailover(t, c, client, newLog(t, backlog.RedisConfig{KeyPrefix: "failover:"}), "failover:")
	})
	// Last: the crashed master stays down.
	t.Run("MasterCrashWhileFollowing", func(t *testing.T) {
		testClusterCrash(t, c, client, newLog(t, backlog.RedisConfig{KeyPrefix: "crash:"}), "crash:")
	})
}

// testClusterCrash kills the master of followed channels, one on each
// master, while they are appended to: the follower of the crashed
// master's channel subscribes again on the promoted replica and delivers
// what the stream holds there once and in order (entries the dead master
// had not passed on may have been delivered before, and then a gap is
// the loss reported); the channels on the other masters go on without a
// gap.
func testClusterCrash(t *testing.T, c *redistest.Cluster, client redis.UniversalClient, r *backlog.Redis, prefix string) {
	ctx := testContext(t)
	names := channelOnEach(t, c, prefix, "crash")
	tails := make(map[*redistest.Server]*tail)
	appenders := make(map[*redistest.Server]*appender)
	for master, ch := range names {
		create(t, ctx, r, ch, backlog.ChannelConfig{})
		tails[master] = startTail(t, ctx, r, ch)
		appenders[master] = startAppender(t, ctx, r, ch, false)
	}
	var victim *redistest.Server
	for master, a := range appenders {
		a.waitMore(t, ctx, 20, true)
		victim = master
	}
	promoted := c.KillMaster(victim)
	for _, a := range appenders {
		a.waitMore(t, ctx, 20, true)
	}
	for master, a := range appenders {
		a.halt()
		ch := names[master]
		tails[master].wantStream(t, ctx, client, prefix+"ch:{"+ch+"}", master == victim)
		node := master
		if master == victim {
			node = promoted
		}
		wantSubscribedOn(t, ctx, prefix, ch, node)
	}
}

// channelOnEach returns, for each master, a channel name whose keys it
// serves, and the masters.
func channelOnEach(t *testing.T, c *redistest.Cluster, prefix, base string) map[*redistest.Server]string {
	t.Helper()
	masters := c.Masters()
	out := make(map[*redistest.Server]string)
	for i := 0; len(out) < len(masters) && i < 1000; i++ {
		name := fmt.Sprintf("%s%d", base, i)
		m := c.MasterOf(c.Slot(prefix + "ch:{" + name + "}"))
		if _, ok := out[m]; !ok {
			out[m] = name
		}
	}
	if len(out) != 3 || len(masters) != 3 {
		t.Fatalf("channels on %d of %d masters, want 3", len(out), len(masters))
	}
	return out
}

// testClusterSpread: channels land on every master, each channel's keys in
// one slot, and List finds every channel across the masters, page by page.
func testClusterSpread(t *testing.T, c *redistest.Cluster, r *backlog.Redis, prefix string) {
	ctx := testContext(t)
	var want []string
	perMaster := make(map[string]int)
	for i := range 60 {
		name := fmt.Sprintf("s.%02d", i)
		create(t, ctx, r, name, backlog.ChannelConfig{Retention: time.Hour})
		appendN(t, ctx, r, name, 1)
		if _, _, err := r.AppendIdempotent(ctx, name, []byte(`"k"`), backlog.Idempotency{Key: "k", Window: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Enqueue(ctx, name, backlog.Request{ReplyTo: "inbox", Deadline: time.Now().Add(time.Minute), Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		slot := c.Slot(prefix + "ch:{" + name + "}")
		for _, k := range []string{"meta:{" + name + "}", "req:{" + name + "}", "idem:{" + name + "}:k"} {
			if s := c.Slot(prefix + k); s != slot {
				t.Errorf("%s%s in slot %d, the stream in %d", prefix, k, s, slot)
			}
		}
		perMaster[c.MasterOf(slot).Addr()]++
		want = append(want, name)
	}
	if len(perMaster) != 3 {
		t.Fatalf("60 channels on %d masters (%v), want all 3", len(perMaster), perMaster)
	}
	t.Logf("channels per master: %v", perMaster)
	for _, limit := range []int{1, 7, 1000} {
		got := walkList(t, ctx, r, "", limit)
		if !slices.Equal(got, want) {
			t.Errorf("List, limit %d: %d names %v, want the %d channels", limit, len(got), got, len(want))
		}
	}
	if got := walkList(t, ctx, r, "s.1", 3); !slices.Equal(got, want[10:20]) {
		t.Errorf("List of prefix s.1 = %v, want %v", got, want[10:20])
	}
	for _, cursor := range []string{"x", "1.zz.0", "99999.00000000.0", "0.00000000", "5"} {
		if _, _, err := r.List(ctx, "", cursor, 10); !errors.Is(err, backlog.ErrBadCursor) {
			t.Errorf("List from %q: %v, want ErrBadCursor", cursor, err)
		}
	}
	if err := r.TrimExpired(ctx); err != nil {
		t.Errorf("TrimExpired over every master: %v", err)
	}
}

// walkList lists every page, sorted and without duplicates.
func walkList(t *testing.T, ctx context.Context, r *backlog.Redis, prefix string, limit int) []string {
	t.Helper()
	return backlogtest.Walk(t, ctx, r, prefix, limit)
}

// waitBlockedOn polls until n clients of node are blocked.
func waitBlockedOn(t *testing.T, ctx context.Context, node *redistest.Server, n int) {
	t.Helper()
	want := fmt.Sprintf("blocked_clients:%d\r", n)
	cl := redis.NewClient(&redis.Options{Addr: node.Addr()})
	defer cl.Close()
	retry(t, ctx, "waiting for a blocked client on "+node.Addr(), func() error {
		info, err := cl.Info(ctx, "clients").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, want) {
			return errors.New("not blocked yet")
		}
		return nil
	})
}

// testClusterClaim: a blocking Claim blocks on the master of its queue's
// slot, wherever that is, wakes up on an Enqueue, and ends at once on
// cancel and on Close, through a CLIENT UNBLOCK sent to that master.
func testClusterClaim(t *testing.T, c *redistest.Cluster, client redis.UniversalClient, r *backlog.Redis, prefix string) {
	ctx := testContext(t)
	claim := func(ctx context.Context, r *backlog.Redis, ch string) chan error {
		done := make(chan error, 1)
		go func() {
			reqs, err := r.Claim(ctx, ch, "g", "c", 1, time.Minute)
			if err == nil && len(reqs) != 1 {
				err = fmt.Errorf("claimed %d requests, want 1", len(reqs))
			}
			done <- err
		}()
		return done
	}
	for master, ch := range channelOnEach(t, c, prefix, "q") {
		create(t, ctx, r, ch, backlog.ChannelConfig{})
		done := claim(ctx, r, ch)
		waitBlockedOn(t, ctx, master, 1)
		if _, err := r.Enqueue(ctx, ch, backlog.Request{ReplyTo: "inbox", Deadline: time.Now().Add(time.Minute), Data: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Claim on %s: %v", master.Addr(), err)
		}
		waitBlockedOn(t, ctx, master, 0)

		// The Claim blocks a minute, longer than the test may run: only
		// an UNBLOCK that reached its node ends it.
		cctx, cancel := context.WithCancel(ctx)
		done = claim(cctx, r, ch)
		waitBlockedOn(t, ctx, master, 1)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Claim on %s: %v, want context.Canceled", master.Addr(), err)
		}
		waitBlockedOn(t, ctx, master, 0)

		other := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: prefix})
		done = claim(ctx, other, ch)
		waitBlockedOn(t, ctx, master, 1)
		other.Close()
		if err := <-done; !errors.Is(err, backlog.ErrClosed) {
			t.Errorf("Claim on %s across Close: %v, want ErrClosed", master.Addr(), err)
		}
		waitBlockedOn(t, ctx, master, 0)
	}
}

// cutConns wraps a dialer's connections: once armed, the connection that
// next receives a reply drops it and reads EOF, as when the network fails
// after Redis ran a command.
type cutConns struct{ armed atomic.Bool }

func (c *cutConns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &cutConn{Conn: conn, cut: c}, nil
}

type cutConn struct {
	net.Conn
	cut *cutConns
}

func (c *cutConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.cut.armed.CompareAndSwap(true, false) {
		c.Conn.Close()
		return 0, io.EOF
	}
	return n, err
}

// testClusterNotRetried: an append whose reply is lost is not sent again.
// go-redis's ClusterClient re-sends after EOF within MaxRedirects whatever
// MaxRetries says, which stored such an append twice.
func testClusterNotRetried(t *testing.T, c *redistest.Cluster) {
	ctx := testContext(t)
	cut := &cutConns{}
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Dialer: cut.dial, ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	r := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: "cut:"})
	t.Cleanup(func() { r.Close() })
	create(t, ctx, r, "c", backlog.ChannelConfig{})
	appendN(t, ctx, r, "c", 1) // warm: the slot map and a connection
	cut.armed.Store(true)
	_, err := r.Append(ctx, "c", []byte(`"once"`))
	if !errors.Is(err, backlog.ErrUnavailable) {
		t.Errorf("append on a cut connection: %v, want ErrUnavailable", err)
	}
	n, xerr := c.Client().XLen(ctx, "cut:ch:{c}").Result()
	if xerr != nil {
		t.Fatal(xerr)
	}
	if n != 2 {
		t.Fatalf("stream holds %d messages after one warm-up and one cut append (append err %v), want 2: the append ran twice", n, err)
	}
	// A failure before the command left is still retried elsewhere, and
	// redirections are still followed: the next append goes through.
	appendN(t, ctx, r, "c", 1)
}

// appender appends to ch until stopped, recording what was acknowledged.
type appender struct {
	mu      sync.Mutex
	acked   []backlog.ID
	keys    map[string]backlog.ID // idempotency key → acknowledged ID
	tries   int
	failed  int
	lastErr error
	stop    chan struct{}
	done    chan struct{}
}

// startAppender appends to ch in a loop. With keyed, each append has an
// idempotency key and is retried until acknowledged; without, a failed
// append is not retried.
func startAppender(t *testing.T, ctx context.Context, r *backlog.Redis, ch string, keyed bool) *appender {
	a := &appender{keys: make(map[string]backlog.ID), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for i := 0; ; i++ {
			key := fmt.Sprintf("k%d", i)
			for {
				select {
				case <-a.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				actx, cancel := context.WithTimeout(ctx, 3*time.Second)
				var id backlog.ID
				var err error
				if keyed {
					id, _, err = r.AppendIdempotent(actx, ch, []byte(`"`+key+`"`), backlog.Idempotency{Key: key, Window: time.Hour})
				} else {
					id, err = r.Append(actx, ch, []byte(`"`+key+`"`))
				}
				cancel()
				a.mu.Lock()
				a.tries++
				if err != nil {
					a.failed++
					a.lastErr = err
				} else {
					a.acked = append(a.acked, id)
					a.keys[key] = id
				}
				a.mu.Unlock()
				if err == nil || !keyed {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return a
}

// waitTries waits until the appender made n more attempts than when
// called, or acknowledged n more with acked.
func (a *appender) waitMore(t *testing.T, ctx context.Context, n int, acked bool) {
	t.Helper()
	count := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		if acked {
			return len(a.acked)
		}
		return a.tries
	}
	from := count()
	retry(t, ctx, fmt.Sprintf("%d more appends", n), func() error {
		if count() < from+n {
			return errors.New("not yet")
		}
		return nil
	})
}

func (a *appender) halt() {
	close(a.stop)
	<-a.done
}

// wantStored compares the stream with what the appender was told: every
// acknowledged ID once, in order, and nothing else.
func wantStored(t *testing.T, ctx context.Context, client redis.UniversalClient, key string, a *appender) {
	t.Helper()
	entries, err := client.XRange(ctx, key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	stored := make([]backlog.ID, len(entries))
	for i, e := range entries {
		stored[i], _ = backlog.ParseID(e.ID)
	}
	if !slices.Equal(stored, a.acked) {
		t.Fatalf("stream holds %d entries, %d were acknowledged: stored %v, acknowledged %v", len(stored), len(a.acked), stored, a.acked)
	}
}

// tail follows one channel with a follower of its own from the start,
// keeping what it delivers, as a hub does across faults.
type tail struct {
	f    backlog.Follower
	mu   sync.Mutex
	ids  []backlog.ID
	gaps int
	done chan struct{}
}

func startTail(t *testing.T, ctx context.Context, r *backlog.Redis, ch string) *tail {
	tl := &tail{f: r.NewFollower(), done: make(chan struct{})}
	tl.f.Follow(ch, backlog.Zero)
	go func() {
		defer close(tl.done)
		for ctx.Err() == nil {
			batches, err := tl.f.Next(ctx, 100)
			if err != nil {
				if errors.Is(err, backlog.ErrClosed) {
					return
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			tl.mu.Lock()
			for _, b := range batches {
				if b.Gap {
					tl.gaps++
				}
				tl.ids = append(tl.ids, idsOf(b.Messages)...)
			}
			tl.mu.Unlock()
		}
	}()
	t.Cleanup(func() { tl.f.Close(); <-tl.done })
	return tl
}

// wantStream waits until the tail delivered as many IDs as the stream
// holds, then checks they are the stream's, once, in order; gapsOK says
// whether a gap may have been reported (a loss that is real).
// wantSubscribedOn waits until one of nodes, the nodes of one shard,
// holds the follower's subscription to ch's notifications: it followed
// the slot to its new master. A demoted master that stays up keeps the
// subscription, which is as good: Redis passes a shard's SPUBLISH to its
// replicas.
func wantSubscribedOn(t *testing.T, ctx context.Context, prefix, ch string, nodes ...*redistest.Server) {
	t.Helper()
	retry(t, ctx, "the follower subscribed in the shard", func() error {
		var total int64
		for _, node := range nodes {
			n, err := node.Client().Do(ctx, "PUBSUB", "SHARDNUMSUB", prefix+"n:{"+ch+"}").Slice()
			if err != nil {
				return err
			}
			if len(n) == 2 {
				total += n[1].(int64)
			}
		}
		if total != 1 {
			return fmt.Errorf("%d subscriptions in the shard", total)
		}
		return nil
	})
}

func (tl *tail) wantStream(t *testing.T, ctx context.Context, client redis.UniversalClient, key string, gapsOK bool) {
	t.Helper()
	var entries []redis.XMessage
	// After a crash, the client's slot map may name the dead master for
	// a moment.
	retry(t, ctx, "XRANGE "+key, func() (err error) {
		entries, err = client.XRange(ctx, key, "-", "+").Result()
		return err
	})
	stored := make([]backlog.ID, len(entries))
	for i, e := range entries {
		stored[i], _ = backlog.ParseID(e.ID)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		tl.mu.Lock()
		ids, gaps := slices.Clone(tl.ids), tl.gaps
		tl.mu.Unlock()
		if len(ids) >= len(stored) || time.Now().After(deadline) {
			if gapsOK {
				// Entries lost with the old master were delivered
				// before the loss; what the stream holds now must
				// follow them, each once.
				ids = slices.DeleteFunc(ids, func(id backlog.ID) bool { return !slices.Contains(stored, id) })
			}
			if !slices.Equal(ids, stored) || (gaps > 0 && !gapsOK) {
				t.Fatalf("the follower delivered %d IDs with %d gaps, the stream holds %d: delivered %v, stored %v", len(ids), gaps, len(stored), ids, stored)
			}
			t.Logf("the follower delivered the stream's %d entries once and in order, %d gaps", len(stored), gaps)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testClusterSlotMove appends while the channel's slot moves to another
// master: half-way (some keys migrated: TRYAGAIN), then with every key
// migrated but the slot not handed over (ASK), then done. What was acknowledged is stored once; nothing else is.
func testClusterSlotMove(t *testing.T, c *redistest.Cluster, client redis.UniversalClient, r *backlog.Redis, prefix string) {
	ctx := testContext(t)
	const ch = "moving"
	stream := prefix + "ch:{" + ch + "}"
	create(t, ctx, r, ch, backlog.ChannelConfig{})
	if _, err := r.Enqueue(ctx, ch, backlog.Request{ReplyTo: "inbox", Deadline: time.Now().Add(time.Hour), Data: []byte("{}")}); err != nil {
		t.Fatal(err) // so that every key the append script names exists
	}
	slot := c.Slot(stream)
	from := c.MasterOf(slot)
	to := c.Masters()[0]
	if to == from {
		to = c.Masters()[1]
	}
	// A Claim blocked on the old master across the move: Redis answers it
	// MOVED once the slot is gone, and it goes on blocking on the new one.
	if reqs, err := r.Claim(ctx, ch, "blocked", "c", 10, 0); err != nil || len(reqs) != 1 {
		t.Fatalf("first Claim of group blocked = %v, %v; want the one request", reqs, err)
	}
	blocked := blockedClaim(ctx, r, ch)
	waitBlockedOn(t, ctx, from, 1)
	tl := startTail(t, ctx, r, ch)
	a := startAppender(t, ctx, r, ch, false)
	a.waitMore(t, ctx, 20, true)
	move := c.BeginSlotMove(slot, to)
	a.waitMore(t, ctx, 20, false)
	if n := move.MigrateKeys(1); n != 1 {
		t.Fatalf("migrated %d keys, want 1", n)
	}
	a.waitMore(t, ctx, 20, false) // half-way: TRYAGAIN
	move.MigrateKeys(0)
	a.waitMore(t, ctx, 20, true) // every key moved, the slot not yet: ASK
	move.Finish()
	a.waitMore(t, ctx, 20, true)
	a.halt()
	t.Logf("%d appends, %d acknowledged, %d failed (last: %v)", a.tries, len(a.acked), a.failed, a.lastErr)
	if got := c.MasterOf(slot); got != to {
		t.Fatalf("slot %d is on %s, want %s", slot, got.Addr(), to.Addr())
	}
	wantStored(t, ctx, client, stream, a)
	tl.wantStream(t, ctx, client, stream, false)
	wantSubscribedOn(t, ctx, prefix, ch, to)
	waitBlockedOn(t, ctx, to, 1)
	if _, err := r.Enqueue(ctx, ch, backlog.Request{ReplyTo: "inbox", Deadline: time.Now().Add(time.Hour), Data: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Errorf("Claim blocked across the move: %v", err)
	}
	// The moved channel serves everything else as before.
	if _, err := r.Info(ctx, ch); err != nil {
		t.Errorf("Info after the move: %v", err)
	}
	if reqs, err := r.Claim(ctx, ch, "g", "c", 10, 0); err != nil || len(reqs) != 2 {
		t.Errorf("Claim after the move = %v, %v; want the two requests", reqs, err)
	}
	if names := walkList(t, ctx, r, "", 10); !slices.Equal(names, []string{ch}) {
		t.Errorf("List after the move = %v", names)
	}
}

// testClusterSlotMoveFollowers moves the slot of a followed channel with
// no poll to fall back on (an hour): the follower must hear the old
// master's SUNSUBSCRIBE and subscribe again where the slot went. Its slot
// map still names the old master, which answers the new SSUBSCRIBE with
// MOVED; here that reply is read, and the connection replaced, before the
// follower records the subscription (AfterSubscribe), as happens when the
// subscribing goroutine waits for a CPU on a loaded machine. The follower
// used to record it on the connection just replaced, and heard the
// channel nowhere again.
func testClusterSlotMoveFollowers(t *testing.T, c *redistest.Cluster, prefix string) {
	ctx := testContext(t)
	// A client of its own, whose slot map the other clients' commands
	// do not refresh.
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { client.Close() })
	r := backlog.NewRedis(client, backlog.RedisConfig{KeyPrefix: prefix, PollInterval: time.Hour})
	t.Cleanup(func() { r.Close() })
	const ch = "resub"
	stream := prefix + "ch:{" + ch + "}"
	create(t, ctx, r, ch, backlog.ChannelConfig{})
	slot := c.Slot(stream)
	from := c.MasterOf(slot)
	to := c.Masters()[0]
	if to == from {
		to = c.Masters()[1]
	}
	tl := startTail(t, ctx, r, ch)
	wantSubscribedOn(t, ctx, prefix, ch, from)
	appendN(t, ctx, r, ch, 1)
	t.Cleanup(backlog.AfterSubscribe(func() { time.Sleep(100 * time.Millisecond) }))
	c.MoveSlot(slot, to)
	wantSubscribedOn(t, ctx, prefix, ch, to)
	appendN(t, ctx, r, ch, 1)
	tl.wantStream(t, ctx, c.Client(), stream, false)
}

// testClusterFailover appends with idempotency keys, retrying each until
// acknowledged, while the channel's master hands over to its replica
// (CLUSTER FAILOVER: no acknowledged write lost). Each key is stored
// once, under the ID its publisher was told.
func testClusterFailover(t *testing.T, c *redistest.Cluster, client redis.UniversalClient, r *backlog.Redis, prefix string) {
	ctx := testContext(t)
	const ch = "failing"
	stream := prefix + "ch:{" + ch + "}"
	create(t, ctx, r, ch, backlog.ChannelConfig{})
	old := c.MasterOf(c.Slot(stream))
	// A Claim blocked on the old master across the failover: Redis
	// unblocks it (UNBLOCKED) when the master becomes a replica, and it
	// goes on blocking on the promoted one.
	blocked := blockedClaim(ctx, r, ch)
	waitBlockedOn(t, ctx, old, 1)
	// A List walk stopped in the old master's keys goes on after it.
	want := []string{ch}
	for i := range 30 {
		name := fmt.Sprintf("l.%02d", i)
		create(t, ctx, r, name, backlog.ChannelConfig{})
		want = append(want, name)
	}
	slices.Sort(want)
	var listed []string
	cursor := ""
	for {
		names, next, err := r.List(ctx, "", cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		listed, cursor = append(listed, names...), next
		if cursor == "" {
			t.Fatalf("no List page stopped on %s: listed %v", old.Addr(), listed)
		}
		var slot int
		if _, err := fmt.Sscanf(cursor, "%d.", &slot); err == nil && c.MasterOf(slot) == old {
			break
		}
	}
	tl := startTail(t, ctx, r, ch)
	a := startAppender(t, ctx, r, ch, true)
	a.waitMore(t, ctx, 20, true)
	promoted := c.Failover(old)
	a.waitMore(t, ctx, 20, true)
	a.halt()
	for cursor != "" {
		names, next, err := r.List(ctx, "", cursor, 2)
		if err != nil {
			t.Fatalf("List from %q after the failover: %v", cursor, err)
		}
		listed, cursor = append(listed, names...), next
	}
	slices.Sort(listed)
	if listed = slices.Compact(listed); !slices.Equal(listed, want) {
		t.Errorf("List across the failover = %v, want %v", listed, want)
	}
	t.Logf("%d appends, %d acknowledged, %d failed and retried (last: %v)", a.tries, len(a.acked), a.failed, a.lastErr)
	if got := c.MasterOf(c.Slot(stream)); got != promoted {
		t.Fatalf("the channel's master is %s, want the promoted %s", got.Addr(), promoted.Addr())
	}
	entries, err := client.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	byKey := make(map[string]backlog.ID)
	for _, e := range entries {
		data, _ := e.Values["data"].(string)
		key := strings.Trim(data, `"`)
		if _, dup := byKey[key]; dup {
			t.Errorf("key %s stored twice", key)
		}
		byKey[key], _ = backlog.ParseID(e.ID)
	}
	if len(byKey) != len(a.keys) {
		t.Errorf("%d keys stored, %d acknowledged", len(byKey), len(a.keys))
	}
	for key, id := range a.keys {
		if byKey[key] != id {
			t.Errorf("key %s acknowledged as %v, stored as %v", key, id, byKey[key])
		}
	}
	tl.wantStream(t, ctx, client, stream, false)
	wantSubscribedOn(t, ctx, prefix, ch, promoted, old)
	// The new master serves the channel's requests too.
	waitBlockedOn(t, ctx, promoted, 1)
	if _, err := r.Enqueue(ctx, ch, backlog.Request{ReplyTo: "inbox", Deadline: time.Now().Add(time.Minute), Data: []byte("{}")}); err != nil {
		t.Errorf("Enqueue after the failover: %v", err)
	}
	if err := <-blocked; err != nil {
		t.Errorf("Claim blocked across the failover: %v", err)
	}
}

// blockedClaim claims one request of group "blocked", blocking a minute,
// in a goroutine.
func blockedClaim(ctx context.Context, r *backlog.Redis, ch string) chan error {
	done := make(chan error, 1)
	go func() {
		reqs, err := r.Claim(ctx, ch, "blocked", "c", 1, time.Minute)
		if err == nil && len(reqs) != 1 {
			err = fmt.Errorf("claimed %d requests, want 1", len(reqs))
		}
		done <- err
	}()
	return done
}
