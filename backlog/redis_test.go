package backlog_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/backlog/backlogtest"
	"github.com/tslm/tslm/internal/redistest"
)

var prefixSeq atomic.Int64

// newRedis returns a backlog with its own key prefix on srv, so that tests
// can share one server.
func newRedis(t *testing.T, srv *redistest.Server, cfg backlog.RedisConfig) *backlog.Redis {
	t.Helper()
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = fmt.Sprintf("test%d:", prefixSeq.Add(1))
	}
	r := backlog.NewRedis(srv.Client(), cfg)
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	backlogtest.Run(t, func(t *testing.T) backlog.Log {
		return newRedis(t, srv, backlog.RedisConfig{})
	})
}

func TestRedisChannelLimitConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	backlogtest.RunLimit(t, func(t *testing.T, maxChannels int) backlog.Log {
		return newRedis(t, srv, backlog.RedisConfig{MaxChannels: maxChannels})
	})
}

// TestRedisLosesNewest: what the Redis backlog tells once a stream lost its
// newest entries, as after a failover that lost writes (here by XDEL,
// which leaves the last generated ID as such a failover would not: the
// reader's cursor stays past the loss either way).
func TestRedisLosesNewest(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client()
	backlogtest.RunLoss(t, func(t *testing.T) backlog.Log {
		return newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "loss:"})
	}, func(t *testing.T, ctx context.Context, _ backlog.Log, channel string, n int) []backlog.ID {
		key := "loss:ch:{" + channel + "}"
		entries, err := rdb.XRevRangeN(ctx, key, "+", "-", int64(n)).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]backlog.ID, len(entries))
		raw := make([]string, len(entries))
		for i, e := range entries {
			ids[len(ids)-1-i], _ = backlog.ParseID(e.ID)
			raw[i] = e.ID
		}
		if err := rdb.XDel(ctx, key, raw...).Err(); err != nil {
			t.Fatal(err)
		}
		return ids
	})
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func create(t *testing.T, ctx context.Context, l backlog.Log, ch string, cfg backlog.ChannelConfig) {
	t.Helper()
	if created, err := l.Create(ctx, ch, cfg); err != nil || !created {
		t.Fatalf("Create(%s) = %v, %v", ch, created, err)
	}
}

func appendN(t *testing.T, ctx context.Context, l backlog.Log, ch string, n int) []backlog.ID {
	t.Helper()
	ids := make([]backlog.ID, n)
	for i := range ids {
		id, err := l.Append(ctx, ch, fmt.Appendf(nil, `{"n":%d}`, i))
		if err != nil {
			t.Fatalf("Append #%d: %v", i, err)
		}
		ids[i] = id
	}
	return ids
}

// retry calls op until it succeeds, failing t after a deadline generous
// enough for a restarted server on a loaded machine: pooled connections
// died with the old process, and the new one takes its time to answer.
func retry(t *testing.T, ctx context.Context, what string, op func() error) {
	t.Helper()
	const within = 20 * time.Second
	deadline := time.Now().Add(within)
	for {
		err := op()
		if err == nil {
			return
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readOne follows ch after cur with a new follower until a batch arrives,
// retrying errors while the server comes back.
func readOne(t *testing.T, ctx context.Context, l backlog.Log, ch string, cur backlog.ID) backlog.Batch {
	t.Helper()
	var lastErr error
	for ctx.Err() == nil {
		batches, err := backlog.ReadOnce(ctx, l, []backlog.Cursor{{Channel: ch, After: cur}}, 100, 5*time.Second)
		if err != nil {
			lastErr = err
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if len(batches) == 1 {
			return batches[0]
		}
		if len(batches) > 1 {
			t.Fatalf("batches = %+v, want one", batches)
		}
	}
	t.Fatalf("no batch for %s after %v: %v", ch, cur, lastErr)
	return backlog.Batch{}
}

func TestRedisRestartWithAOFKeepsIDsAndContinuity(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	if !srv.CanRestart() {
		t.Skip("needs a restartable redis-server")
	}
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{})
	create(t, ctx, r, "prices", backlog.ChannelConfig{MaxLen: 3})
	ids := appendN(t, ctx, r, "prices", 5) // ids[0] and ids[1] are trimmed
	srv.Restart()

	var info backlog.Info
	retry(t, ctx, "Info after restart", func() (err error) {
		info, err = r.Info(ctx, "prices")
		return err
	})
	if info.Length != 3 || info.FirstID != ids[2] || info.LastID != ids[4] || info.Config.MaxLen != 3 {
		t.Errorf("info after restart = %+v, want 3 messages %v..%v, MaxLen 3", info, ids[2], ids[4])
	}
	page, err := r.Range(ctx, "prices", ids[2], 10)
	if err != nil {
		t.Fatal(err)
	}
	if !page.Continuous || len(page.Messages) != 2 || page.Messages[0].ID != ids[3] {
		t.Errorf("range after %v = %+v, want ids[3:] continuous", ids[2], page)
	}
	next := appendN(t, ctx, r, "prices", 1)[0]
	if !ids[4].Less(next) {
		t.Errorf("id after restart %v not after %v", next, ids[4])
	}
	// A cursor still held proves that nothing after it was lost; one
	// trimmed cannot. (The append above trimmed ids[2]: ids[3] is the
	// oldest held.)
	if b := readOne(t, ctx, r, "prices", ids[3]); b.Gap {
		t.Errorf("read after held %v reports a gap", ids[3])
	}
	if b := readOne(t, ctx, r, "prices", ids[0]); !b.Gap {
		t.Errorf("read after %v, with %v trimmed since, reports no gap", ids[0], ids[1])
	}
}

func TestRedisRestartEmptyBreaksContinuity(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: false})
	if !srv.CanRestart() {
		t.Skip("needs a restartable redis-server")
	}
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{})
	create(t, ctx, r, "prices", backlog.ChannelConfig{})
	old := appendN(t, ctx, r, "prices", 3)
	// Warm the pool so that the next commands meet dead connections.
	if b := readOne(t, ctx, r, "prices", old[1]); b.Gap {
		t.Fatalf("read before restart reports a gap: %+v", b)
	}
	srv.Restart()

	var err error
	retry(t, ctx, "Info after an empty restart", func() error {
		if _, err = r.Info(ctx, "prices"); errors.Is(err, backlog.ErrUnavailable) {
			return err
		}
		return nil
	})
	if !errors.Is(err, backlog.ErrNotFound) {
		t.Fatalf("Info after an empty restart: %v, want ErrNotFound", err)
	}
	create(t, ctx, r, "prices", backlog.ChannelConfig{})
	fresh := appendN(t, ctx, r, "prices", 2)
	page, err := r.Range(ctx, "prices", old[2], 10)
	if err != nil {
		t.Fatal(err)
	}
	if page.Continuous {
		t.Errorf("range after %v, an id from before the reset, claims continuity", old[2])
	}
	b := readOne(t, ctx, r, "prices", old[2])
	if !b.Gap || len(b.Messages) != 2 || b.Messages[0].ID != fresh[0] {
		t.Errorf("read after the vanished cursor = %+v, want Gap with %v", b, fresh)
	}
}

func TestRedisForeignEntriesAreReturnedAsIs(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "tslm:"})
	create(t, ctx, r, "c", backlog.ChannelConfig{})
	// A publisher writing straight to Redis, as docs/redis.md allows.
	if err := srv.Client().Do(ctx, "XADD", "tslm:ch:{c}", "MAXLEN", "~", "10", "*", "data", "not json").Err(); err != nil {
		t.Fatal(err)
	}
	page, err := r.Range(ctx, "c", backlog.Zero, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 || string(page.Messages[0].Data) != "not json" || !page.Continuous {
		t.Errorf("range = %+v, want the raw bytes %q, continuous", page, "not json")
	}
	b := readOne(t, ctx, r, "c", backlog.Zero)
	if len(b.Messages) != 1 || string(b.Messages[0].Data) != "not json" || b.Gap {
		t.Errorf("read = %+v, want the raw bytes %q without gap", b, "not json")
	}
}

// TestRedisGapProofs covers the only ways a follower and Range prove that nothing
// after a cursor was lost (docs/redis.md, "Resume proof"), and a trim by a
// direct publisher that no record of removals could see.
func TestRedisGapProofs(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	client := srv.Client()
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "proof:"})

	t.Run("publisher trim past the newest entry the gateway trimmed", func(t *testing.T) {
		create(t, ctx, r, "approx", backlog.ChannelConfig{MaxLen: 300})
		// The gateway's exact MAXLEN removes ids[0]: the newest entry it
		// ever trimmed, which a reader may still hold as its cursor.
		ids := appendN(t, ctx, r, "approx", 301)
		// A publisher, as docs/redis.md allows. Redis trims whole nodes of
		// 100 entries while at least 100 remain: here ids[0] to ids[199].
		if err := client.Do(ctx, "XADD", "proof:ch:{approx}", "MAXLEN", "~", "100", "*", "data", "{}").Err(); err != nil {
			t.Fatal(err)
		}
		if n, err := client.XLen(ctx, "proof:ch:{approx}").Result(); err != nil || n >= 300 {
			t.Fatalf("XLEN after the publisher's trim = %d, %v; want a trim past ids[1]", n, err)
		}
		b := readOne(t, ctx, r, "approx", ids[0])
		if !b.Gap || b.Messages[0].ID == ids[1] {
			t.Errorf("read after %v = gap %v, %d messages from %v; want a gap", ids[0], b.Gap, len(b.Messages), b.Messages[0].ID)
		}
		page, err := r.Range(ctx, "approx", ids[0], 10)
		if err != nil {
			t.Fatal(err)
		}
		if page.Continuous {
			t.Errorf("range after %v claims continuity across the publisher's trim", ids[0])
		}
	})

	t.Run("idle channel past its retention keeps its newest entry", func(t *testing.T) {
		create(t, ctx, r, "retained", backlog.ChannelConfig{Retention: 50 * time.Millisecond})
		last := appendN(t, ctx, r, "retained", 3)[2]
		time.Sleep(100 * time.Millisecond) // retention is judged by wall-clock IDs
		if err := r.TrimExpired(ctx); err != nil {
			t.Fatal(err)
		}
		info, err := r.Info(ctx, "retained")
		if err != nil || info.Length != 1 || info.FirstID != last || info.LastID != last {
			t.Fatalf("info = %+v, %v; want only %v", info, err, last)
		}
		page, err := r.Range(ctx, "retained", last, 10)
		if err != nil || !page.Continuous || len(page.Messages) != 0 {
			t.Fatalf("range after the newest = %+v, %v; want empty and continuous", page, err)
		}
		next := appendN(t, ctx, r, "retained", 1)[0]
		b := readOne(t, ctx, r, "retained", last)
		if b.Gap || len(b.Messages) != 1 || b.Messages[0].ID != next {
			t.Errorf("read after the newest = %+v, want %v without gap", b, next)
		}
	})

	t.Run("trimmed cursor followed by its immediate successor", func(t *testing.T) {
		create(t, ctx, r, "succ", backlog.ChannelConfig{})
		for _, id := range []string{"1000-1", "1000-2", "1000-3"} {
			if err := client.XAdd(ctx, &redis.XAddArgs{Stream: "proof:ch:{succ}", ID: id, Values: []any{"data", "{}"}}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := client.XTrimMaxLen(ctx, "proof:ch:{succ}", 2).Err(); err != nil {
			t.Fatal(err)
		}
		if b := readOne(t, ctx, r, "succ", backlog.ID{Ms: 1000, Seq: 1}); b.Gap {
			t.Errorf("read after trimmed 1000-1, from 1000-2 = %+v, want no gap", b)
		}
		if b := readOne(t, ctx, r, "succ", backlog.ID{Ms: 1000}); !b.Gap {
			t.Errorf("read after 1000-0, from 1000-2 with 1000-1 trimmed = %+v, want a gap", b)
		}
		if b := readOne(t, ctx, r, "succ", backlog.Zero); !b.Gap {
			t.Errorf("read from 0-0 with 1000-1 trimmed = %+v, want a gap", b)
		}
	})
}

// A Create whose SADD to the retention registry failed after the meta was
// written is repaired by the next Create, although that one creates
// nothing.
func TestRedisCreateRepairsRetentionRegistry(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "repair:"})
	client := srv.Client()
	create(t, ctx, r, "kept", backlog.ChannelConfig{Retention: time.Hour})
	create(t, ctx, r, "forever", backlog.ChannelConfig{})
	if err := client.SRem(ctx, "repair:retention", "kept").Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		channel string
		cfg     backlog.ChannelConfig
		want    bool
	}{
		{"kept", backlog.ChannelConfig{Retention: time.Hour}, true},
		{"kept", backlog.ChannelConfig{}, true}, // the stored retention counts
		{"forever", backlog.ChannelConfig{Retention: time.Hour}, false},
	} {
		created, err := r.Create(ctx, c.channel, c.cfg)
		if err != nil || created {
			t.Fatalf("Create(%s) again = %v, %v; want false, nil", c.channel, created, err)
		}
		member, err := client.SIsMember(ctx, "repair:retention", c.channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if member != c.want {
			t.Errorf("after Create(%s, %+v): registry member = %v, want %v", c.channel, c.cfg, member, c.want)
		}
	}
}

func TestRedisDownIsUnavailableThenRecovers(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{AOF: true})
	if !srv.CanRestart() {
		t.Skip("needs a restartable redis-server")
	}
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{PollInterval: 200 * time.Millisecond})
	create(t, ctx, r, "c", backlog.ChannelConfig{})
	head := appendN(t, ctx, r, "c", 1)[0]
	f := r.NewFollower()
	defer f.Close()
	f.Follow("c", head)
	readOne(t, ctx, r, "c", backlog.Zero) // leaves idle connections behind
	srv.Stop()

	ops := []struct {
		name string
		fn   func() error
	}{
		{"Create", func() error { _, err := r.Create(ctx, "d", backlog.ChannelConfig{}); return err }},
		{"Info", func() error { _, err := r.Info(ctx, "c"); return err }},
		{"Append", func() error { _, err := r.Append(ctx, "c", []byte("1")); return err }},
		{"Range", func() error { _, err := r.Range(ctx, "c", backlog.Zero, 10); return err }},
		{"TailStart", func() error { _, err := r.TailStart(ctx, "c", 10); return err }},
		{"Follower.Next", func() error {
			for {
				if _, err := f.Next(ctx, 10); err != nil {
					return err
				}
			}
		}},
		{"TrimExpired", func() error { return r.TrimExpired(ctx) }},
	}
	for _, op := range ops {
		start := time.Now()
		err := op.fn()
		if !errors.Is(err, backlog.ErrUnavailable) {
			t.Errorf("%s with Redis down: %v, want ErrUnavailable", op.name, err)
		}
		// Far less than ctx's 30s: a refused connection is an answer,
		// not something to wait out. Generous for a loaded machine.
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s took %v to fail", op.name, d)
		}
	}

	srv.Start()
	got := make(chan backlog.Batch, 1)
	go func() { got <- readOne(t, ctx, r, "c", head) }()
	var id backlog.ID
	retry(t, ctx, "Append after Redis came back", func() (err error) {
		id, err = r.Append(ctx, "c", []byte(`{}`))
		return err
	})
	select {
	case b := <-got:
		if b.Gap || len(b.Messages) != 1 || b.Messages[0].ID != id {
			t.Errorf("read after recovery = %+v, want %v without gap", b, id)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a follower did not recover after Redis came back")
	}
	// The follower that lived through the outage catches up too: its
	// pub/sub connection subscribes again, and the confirmation starts
	// a read after its cursor.
	nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		batches, err := f.Next(nctx, 10)
		if nctx.Err() != nil {
			t.Fatal("the follower that lived through the outage did not catch up")
		}
		if err != nil || len(batches) == 0 {
			continue
		}
		if len(batches) != 1 || batches[0].Gap || len(batches[0].Messages) != 1 || batches[0].Messages[0].ID != id {
			t.Fatalf("the follower that lived through the outage got %+v, want %v without gap", batches, id)
		}
		break
	}
}

func TestNewRedisClient(t *testing.T) {
	for _, c := range []struct {
		url     string
		wantErr bool
	}{
		{"redis://127.0.0.1:1/0", false},
		{"rediss://user:pw@redis.example:6380/2", false},
		{"redis://127.0.0.1:1/0?pool_size=3", false},
		{"http://127.0.0.1:6379", true},
		{"redis://127.0.0.1:1/notadb", true},
	} {
		t.Run(c.url, func(t *testing.T) {
			client, err := backlog.NewRedisClient(c.url)
			if (err != nil) != c.wantErr {
				t.Fatalf("NewRedisClient(%q) error = %v, want error %v", c.url, err, c.wantErr)
			}
			if err != nil {
				return
			}
			defer client.Close()
			opt := client.(*redis.Client).Options()
			if !opt.ContextTimeoutEnabled {
				t.Error("ContextTimeoutEnabled is off")
			}
			wantPool := 10*runtime.GOMAXPROCS(0) + 1024
			if strings.Contains(c.url, "pool_size=3") {
				wantPool = 3
			}
			if opt.PoolSize != wantPool {
				t.Errorf("PoolSize = %d, want %d", opt.PoolSize, wantPool)
			}
			if strings.HasPrefix(c.url, "rediss:") && opt.TLSConfig == nil {
				t.Error("rediss:// without TLS")
			}
		})
	}
}

// TestRedisListEscapesPrefix: a key prefix holding SCAN MATCH's special
// characters lists its own channels only.
func TestRedisListEscapesPrefix(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	glob := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "g*?[a]\\:"})
	plain := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "gzza\\:"})
	create(t, ctx, glob, "mine", backlog.ChannelConfig{})
	create(t, ctx, plain, "theirs", backlog.ChannelConfig{})
	for _, tc := range []struct {
		log  *backlog.Redis
		want string
	}{{glob, "mine"}, {plain, "theirs"}} {
		names, next, err := tc.log.List(ctx, "", "", 100)
		if err != nil || next != "" || len(names) != 1 || names[0] != tc.want {
			t.Errorf("List = %v, %q, %v; want [%s]", names, next, err, tc.want)
		}
	}
}

func TestCheckKeyPrefix(t *testing.T) {
	for prefix, ok := range map[string]bool{
		"tslm:": true, "a": true, "app/prod:": true, strings.Repeat("p", backlog.MaxKeyPrefixLen): true,
		"": false, "a{b}:": false, "}": false, "with space": false, "é:": false,
		strings.Repeat("p", backlog.MaxKeyPrefixLen+1): false,
	} {
		if err := backlog.CheckKeyPrefix(prefix); (err == nil) != ok {
			t.Errorf("CheckKeyPrefix(%q) = %v, want ok %v", prefix, err, ok)
		}
	}
}

// TestRedisDeleteTombstone: a delete leaves a tombstone stream that
// expires, and creating the name again keeps the stream for good, empty,
// with its last ID.
func TestRedisDeleteTombstone(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: "tomb:"})
	rdb := srv.Client()
	create(t, ctx, r, "c", backlog.ChannelConfig{})
	last := appendN(t, ctx, r, "c", 3)[2]
	if err := r.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	ttl, err := rdb.PTTL(ctx, "tomb:ch:{c}").Result()
	if err != nil || ttl <= 0 || ttl > time.Hour {
		t.Fatalf("tombstone PTTL = %v, %v; want within an hour", ttl, err)
	}
	xs, err := rdb.XRange(ctx, "tomb:ch:{c}", "-", "+").Result()
	if err != nil || len(xs) != 1 || xs[0].Values["deleted"] != "1" {
		t.Fatalf("tombstone stream = %v, %v; want one deleted entry", xs, err)
	}
	if n, _ := rdb.Exists(ctx, "tomb:meta:{c}").Result(); n != 0 {
		t.Fatal("meta survived the delete")
	}

	create(t, ctx, r, "c", backlog.ChannelConfig{})
	if ttl, err := rdb.PTTL(ctx, "tomb:ch:{c}").Result(); err != nil || ttl != -1 {
		t.Fatalf("stream of the new channel: PTTL = %v, %v; want no expiry", ttl, err)
	}
	xi, err := rdb.XInfoStream(ctx, "tomb:ch:{c}").Result()
	if err != nil || xi.Length != 0 || xi.EntriesAdded != 0 {
		t.Fatalf("stream of the new channel = %+v, %v; want empty, nothing added", xi, err)
	}
	if id, _ := backlog.ParseID(xi.LastGeneratedID); !last.Less(id) {
		t.Fatalf("last generated id %v, want the tombstone's, after %v", xi.LastGeneratedID, last)
	}
}
