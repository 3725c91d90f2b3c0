package backlog_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// collect runs f.Next in the test's goroutine until want messages of ch
// arrived or the deadline passes, and returns them with the gaps seen.
// When expect is given, the messages must be those.
func collect(t *testing.T, ctx context.Context, f backlog.Follower, ch string, want int, within time.Duration, expect ...backlog.ID) (ids []backlog.ID, gaps int) {
	t.Helper()
	if expect != nil {
		defer func() { sameIDs(t, "collected", ids, expect) }()
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for len(ids) < want {
		batches, err := f.Next(ctx, 100)
		if ctx.Err() != nil {
			t.Fatalf("%d of %d messages after %v; last error %v", len(ids), want, within, err)
		}
		for _, b := range batches {
			if b.Channel != ch {
				t.Fatalf("batch of %s, want only %s", b.Channel, ch)
			}
			if b.Gap {
				gaps++
			}
			ids = append(ids, idsOf(b.Messages)...)
		}
	}
	return ids, gaps
}

func idsOf(msgs []backlog.Message) []backlog.ID {
	ids := make([]backlog.ID, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// commandCalls returns the calls of command from INFO commandstats.
func commandCalls(t *testing.T, ctx context.Context, c *redis.Client, command string) int {
	t.Helper()
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+command+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}

// TestRedisFollowerReadsNothingPerMessage: a follower at the head takes
// each new entry from its notification, with no read of the stream: the
// count of XRANGE (the catch-up read's command) does not grow with the
// messages. The poll interval is an hour, so the poll reads nothing either.
func TestRedisFollowerReadsNothingPerMessage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{PollInterval: time.Hour})
	// The first append after the subscription may be read by the
	// subscription's catch-up; wait for it before counting.
	f := followAtHead(t, ctx, r, "quiet")
	before := commandCalls(t, ctx, srv.Client(), "xrange")
	const n = 200
	var want []backlog.ID
	for range n {
		id := appendN(t, ctx, r, "quiet", 1)
		want = append(want, id...)
		got, gaps := collect(t, ctx, f, "quiet", 1, 10*time.Second)
		sameIDs(t, "next", got, id)
		if gaps > 0 {
			t.Fatal("gap at the head")
		}
	}
	if reads := commandCalls(t, ctx, srv.Client(), "xrange") - before; reads > n/20 {
		t.Errorf("%d XRANGE calls for %d messages delivered at the head, want next to none", reads, n)
	}
}

// TestRedisFollowerSurvivesDroppedPubSub: the pub/sub connection is
// killed again and again while a publisher appends. Notifications sent
// while it was down are lost, yet every message arrives once, in order,
// without a gap: each new subscription's confirmation starts a read
// after the cursor. The poll interval is an hour, so nothing comes by
// the poll.
func TestRedisFollowerSurvivesDroppedPubSub(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{PollInterval: time.Hour})
	create(t, ctx, r, "dropped", backlog.ChannelConfig{})
	f := r.NewFollower()
	defer f.Close()
	f.Follow("dropped", backlog.Zero)
	const n = 300
	want := make(chan []backlog.ID, 1)
	go func() {
		var ids []backlog.ID
		for i := range n {
			id, err := r.Append(ctx, "dropped", []byte(`{}`))
			if err != nil {
				t.Error(err)
				break
			}
			ids = append(ids, id)
			if i%30 == 10 {
				if err := srv.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
					t.Error(err)
				}
			}
			time.Sleep(time.Millisecond)
		}
		want <- ids
	}()
	got, gaps := collect(t, ctx, f, "dropped", n, 20*time.Second)
	sameIDs(t, "through dropped connections", got, <-want)
	if gaps > 0 {
		t.Errorf("%d gaps, want none: nothing was lost", gaps)
	}
}

// TestRedisFollowerCatchesUpAfterResubscribing: an entry added while the
// pub/sub connection was down, with nothing after it, is read by the
// catch-up that the new subscription's confirmation starts. The entry is
// a plain XADD, which notifies nobody, in one transaction with a check
// that no connection was subscribed; the poll interval is an hour.
func TestRedisFollowerCatchesUpAfterResubscribing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "resub:", PollInterval: time.Hour})
	create(t, ctx, r, "r", backlog.ChannelConfig{})
	f := r.NewFollower()
	defer f.Close()
	f.Follow("r", backlog.Zero)
	collect(t, ctx, f, "r", 1, 10*time.Second, appendN(t, ctx, r, "r", 1)...)
	c := srv.Client()
	for attempt := 0; ; attempt++ {
		if attempt == 100 {
			t.Fatal("the follower always subscribed again before the entry was added")
		}
		if err := c.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		var numsub *redis.MapStringIntCmd
		var add *redis.StringCmd
		if _, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			numsub = p.PubSubShardNumSub(ctx, "resub:n:{r}")
			add = p.XAdd(ctx, &redis.XAddArgs{Stream: backlog.StreamKey(r, "r"), Values: []any{"data", "{}"}})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		id, err := backlog.ParseID(add.Val())
		if err != nil {
			t.Fatal(err)
		}
		if numsub.Val()["resub:n:{r}"] == 0 {
			// Added while unsubscribed: only the confirmation's
			// catch-up can bring it.
			if _, gaps := collect(t, ctx, f, "r", 1, 10*time.Second, id); gaps > 0 {
				t.Fatal("gap")
			}
			return
		}
		// Subscribed again already: a notified append brings it along.
		if _, gaps := collect(t, ctx, f, "r", 2, 10*time.Second, append([]backlog.ID{id}, appendN(t, ctx, r, "r", 1)...)...); gaps > 0 {
			t.Fatal("gap")
		}
	}
}

// TestRedisFollowerPlainXAdd: a publisher's plain XADD sends no
// notification. Between two notified appends it is read by the catch-up
// that the second one's prev starts, in order; alone, with nothing after
// it, the poll finds it.
func TestRedisFollowerPlainXAdd(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	xadd := func(r *backlog.Redis, ch string) backlog.ID {
		t.Helper()
		key := backlog.StreamKey(r, ch)
		s, err := srv.Client().XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"data", `{"plain":true}`}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		id, err := backlog.ParseID(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}

	t.Run("between notified appends", func(t *testing.T) {
		r := newRedis(t, srv, backlog.RedisConfig{PollInterval: time.Hour})
		// Subscribed and caught up before the mix, so that only
		// notifications can bring it.
		f := followAtHead(t, ctx, r, "mixed")
		var want []backlog.ID
		for range 20 {
			want = append(want, appendN(t, ctx, r, "mixed", 1)...)
			want = append(want, xadd(r, "mixed"))
		}
		want = append(want, appendN(t, ctx, r, "mixed", 1)...)
		got, gaps := collect(t, ctx, f, "mixed", len(want), 10*time.Second)
		sameIDs(t, "mixed", got, want)
		if gaps > 0 {
			t.Errorf("%d gaps, want none", gaps)
		}
	})

	t.Run("alone", func(t *testing.T) {
		r := newRedis(t, srv, backlog.RedisConfig{PollInterval: 100 * time.Millisecond})
		// Let the subscription's own catch-up pass first, so that only
		// the poll can find the entry.
		f := followAtHead(t, ctx, r, "alone")
		id := xadd(r, "alone")
		got, _ := collect(t, ctx, f, "alone", 1, 10*time.Second)
		sameIDs(t, "alone", got, []backlog.ID{id})
	})
}

// TestRedisFollowerUnsubscribes: Unfollow and Close leave no shard
// subscription behind in Redis.
func TestRedisFollowerUnsubscribes(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "unsub:"})
	names := []string{"a", "b", "c"}
	for _, ch := range names {
		create(t, ctx, r, ch, backlog.ChannelConfig{})
	}
	f := r.NewFollower()
	for _, ch := range names {
		f.Follow(ch, backlog.Zero)
	}
	shardChannels := func() []string {
		got, err := srv.Client().Do(ctx, "PUBSUB", "SHARDCHANNELS").StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		return got
	}
	waitFor := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for got := shardChannels(); !slices.Equal(got, want); got = shardChannels() {
			if time.Now().After(deadline) {
				t.Fatalf("shard channels %v, want %v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("unsub:n:{a}", "unsub:n:{b}", "unsub:n:{c}")
	f.Unfollow("b")
	waitFor("unsub:n:{a}", "unsub:n:{c}")
	f.Close()
	waitFor()
}

func sameIDs(t *testing.T, what string, got, want []backlog.ID) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got %d IDs %v, want %d %v", what, len(got), got, len(want), want)
	}
}

// TestRedisFollowerCatchesUpBeyondOneRound: a catch-up reads 100 channels
// at a time; with 1000 channels to catch up and nothing new on the first
// 999, the last one's entry still comes at once, not a poll interval per
// round (the poll interval is an hour).
func TestRedisFollowerCatchesUpBeyondOneRound(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "rounds:", PollInterval: time.Hour})
	const n = 1000
	f := r.NewFollower()
	defer f.Close()
	var last backlog.ID
	for i := range n {
		ch := "c" + strconv.Itoa(i)
		create(t, ctx, r, ch, backlog.ChannelConfig{})
		head := appendN(t, ctx, r, ch, 1)[0]
		f.Follow(ch, head)
		if i == n-1 {
			last = appendN(t, ctx, r, ch, 1)[0]
		}
	}
	// Every subscription confirmed before the first Next: no confirmation
	// arriving later can wake it for the next round.
	retry(t, ctx, "every subscription confirmed", func() error {
		got, err := srv.Client().Do(ctx, "PUBSUB", "SHARDNUMSUB", "rounds:n:{c0}", "rounds:n:{c"+strconv.Itoa(n-1)+"}").Slice()
		if err != nil || len(got) != 4 || got[1] != int64(1) || got[3] != int64(1) {
			return fmt.Errorf("SHARDNUMSUB = %v, %v", got, err)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	collect(t, ctx, f, "c"+strconv.Itoa(n-1), 1, 5*time.Second, last)
}

// followAtHead creates ch and follows it with a new follower of r, closed
// at the end of the test, once it is subscribed and caught up (it has
// delivered an append made after it followed): from then on, what reaches
// it comes by notification, or by the poll.
func followAtHead(t *testing.T, ctx context.Context, r *backlog.Redis, ch string) backlog.Follower {
	t.Helper()
	create(t, ctx, r, ch, backlog.ChannelConfig{})
	head := appendN(t, ctx, r, ch, 1)[0]
	f := r.NewFollower()
	t.Cleanup(func() { f.Close() })
	f.Follow(ch, head)
	collect(t, ctx, f, ch, 1, 10*time.Second, appendN(t, ctx, r, ch, 1)...)
	return f
}

// TestRedisFollowerBoundsHeldNotifications: a consumer that does not call
// Next lets notifications pile up only to the byte bound; past it they
// are dropped and their channel is caught up by a read, so that the
// messages still all come, once, in order and without a gap, and the
// follower's memory does not follow the backlog. Afterwards a follower
// that is not held back takes entries from notifications again.
func TestRedisFollowerBoundsHeldNotifications(t *testing.T) {
	defer backlog.LimitNoteBytes(4 << 10)()
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "bound:", PollInterval: time.Hour})
	f := followAtHead(t, ctx, r, "big")
	payload := []byte(`"` + strings.Repeat("x", 1000) + `"`)
	var want []backlog.ID
	for range 40 { // 40 KB of notifications, ten times the bound
		id, err := r.Append(ctx, "big", payload)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	before := commandCalls(t, ctx, srv.Client(), "xrange")
	got, gaps := collect(t, ctx, f, "big", len(want), 10*time.Second)
	sameIDs(t, "past the bound", got, want)
	if gaps > 0 {
		t.Errorf("%d gaps, want none", gaps)
	}
	if reads := commandCalls(t, ctx, srv.Client(), "xrange") - before; reads == 0 {
		t.Error("no catch-up read: the notifications past the bound were held after all")
	}
}

// TestRedisFollowerCloseLeavesNothing: a follower that followed channels,
// lost its pub/sub connection and was closed leaves no goroutine and no
// connection behind.
func TestRedisFollowerCloseLeavesNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "leak:", PollInterval: 100 * time.Millisecond})
	for _, ch := range []string{"a", "b"} {
		create(t, ctx, r, ch, backlog.ChannelConfig{})
	}
	base := runtime.NumGoroutine()
	head := backlog.Zero
	for range 3 {
		f := r.NewFollower()
		f.Follow("a", head)
		f.Follow("b", backlog.Zero)
		collect(t, ctx, f, "a", 1, 10*time.Second, appendN(t, ctx, r, "a", 1)...)
		if err := srv.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		last := appendN(t, ctx, r, "a", 1)
		collect(t, ctx, f, "a", 1, 10*time.Second, last...)
		head = last[0]
		f.Close()
	}
	retry(t, ctx, "goroutines back to their number before the followers", func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines, %d before", n, base)
		}
		return nil
	})
	retry(t, ctx, "no pub/sub connection left", func() error {
		list, err := srv.Client().Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			return err
		}
		if strings.TrimSpace(list) != "" {
			return fmt.Errorf("pub/sub clients left:\n%s", list)
		}
		return nil
	})
}
