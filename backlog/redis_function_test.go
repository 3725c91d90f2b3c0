package backlog_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// fcallKeys are the keys of channel ch under prefix in the order
// tslm_publish takes them.
func fcallKeys(prefix, ch string) []string {
	return []string{prefix + "meta:{" + ch + "}", prefix + "ch:{" + ch + "}", prefix + "req:{" + ch + "}"}
}

// fcall publishes data to ch as a direct publisher would and checks that
// the ID returned is the entry stored with data.
func fcall(t *testing.T, ctx context.Context, c redis.UniversalClient, prefix, ch, data string) backlog.ID {
	t.Helper()
	s, err := c.FCall(ctx, "tslm_publish", fcallKeys(prefix, ch), data).Text()
	if err != nil {
		t.Fatalf("FCALL tslm_publish on %s: %v", ch, err)
	}
	id, err := backlog.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := c.XRange(ctx, prefix+"ch:{"+ch+"}", s, s).Result()
	if err != nil || len(stored) != 1 || stored[0].Values["data"] != data {
		t.Fatalf("FCALL returned %s; the stream holds %v there (%v), want data %q", s, stored, err, data)
	}
	return id
}

// TestRedisFunctionPublish: tslm_publish appends as Append does. A
// follower whose poll is an hour away receives what it publishes,
// interleaved with Append, in order and without a gap, and what it
// publishes last, with nothing after it, one by one: only the
// notification can bring those.
func TestRedisFunctionPublish(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	const prefix = "fn:"
	r := newRedis(t, srv, backlog.RedisConfig{KeyPrefix: prefix, PollInterval: time.Hour})
	if err := r.LoadFunctions(ctx); err != nil {
		t.Fatal(err)
	}
	c := srv.Client()

	t.Run("DeliveredByNotification", func(t *testing.T) {
		// Subscribed and caught up before publishing, so that only
		// notifications can bring what follows.
		f := followAtHead(t, ctx, r, "mixed")
		var want []backlog.ID
		for i := range 20 {
			want = append(want, appendN(t, ctx, r, "mixed", 1)...)
			want = append(want, fcall(t, ctx, c, prefix, "mixed", fmt.Sprintf(`{"fcall":%d}`, i)))
		}
		got, gaps := collect(t, ctx, f, "mixed", len(want), 10*time.Second)
		sameIDs(t, "interleaved", got, want)
		for i := range 5 {
			id := fcall(t, ctx, c, prefix, "mixed", fmt.Sprintf(`{"last":%d}`, i))
			got, g := collect(t, ctx, f, "mixed", 1, 10*time.Second)
			sameIDs(t, "published last", got, []backlog.ID{id})
			gaps += g
		}
		if gaps > 0 {
			t.Errorf("%d gaps, want none", gaps)
		}
	})

	t.Run("TrimsToMaxLen", func(t *testing.T) {
		create(t, ctx, r, "short", backlog.ChannelConfig{MaxLen: 3})
		var ids []backlog.ID
		for i := range 10 {
			ids = append(ids, fcall(t, ctx, c, prefix, "short", fmt.Sprintf(`{"n":%d}`, i)))
		}
		info, err := r.Info(ctx, "short")
		if err != nil {
			t.Fatal(err)
		}
		if info.Length != 3 || info.FirstID != ids[7] {
			t.Errorf("after 10 publishes: length %d from %v, want 3 from %v", info.Length, info.FirstID, ids[7])
		}
	})

	t.Run("RestartsExpiry", func(t *testing.T) {
		create(t, ctx, r, "expiring", backlog.ChannelConfig{Expiry: time.Hour})
		keys := fcallKeys(prefix, "expiring")
		for _, k := range keys {
			if err := c.PExpire(ctx, k, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
		}
		fcall(t, ctx, c, prefix, "expiring", `{}`)
		for _, k := range keys[:2] { // the request queue holds nothing
			if ttl := c.PTTL(ctx, k).Val(); ttl < 30*time.Minute {
				t.Errorf("%s expires in %v after a publish, want about an hour", k, ttl)
			}
		}
	})

	t.Run("Errors", func(t *testing.T) {
		create(t, ctx, r, "here", backlog.ChannelConfig{})
		for _, tc := range []struct {
			name string
			keys []string
			args []any
			want string
		}{
			{"no such channel", fcallKeys(prefix, "absent"), []any{"x"}, "ERR tslm: no such channel"},
			{"keys of two channels", []string{prefix + "meta:{here}", prefix + "ch:{here}", prefix + "req:{absent}"}, []any{"x"}, "ERR tslm: usage"},
			{"another prefix", []string{"other:meta:{here}", prefix + "ch:{here}", prefix + "req:{here}"}, []any{"x"}, "ERR tslm: usage"},
			{"two keys", fcallKeys(prefix, "here")[:2], []any{"x"}, "ERR tslm: usage"},
			{"no data", fcallKeys(prefix, "here"), nil, "ERR tslm: usage"},
		} {
			err := c.FCall(ctx, "tslm_publish", tc.keys, tc.args...).Err()
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
			}
		}
		for _, ch := range []string{"absent", "here"} {
			if n := c.Exists(ctx, prefix+"ch:{"+ch+"}").Val(); n != 0 {
				t.Errorf("the refused calls made the stream of %s", ch)
			}
		}
	})

	t.Run("LoadAgain", func(t *testing.T) {
		// Every gateway loads it at start: loading over it is fine.
		if err := r.LoadFunctions(ctx); err != nil {
			t.Fatal(err)
		}
		fcall(t, ctx, c, prefix, "here", `{}`)
	})
}

// testClusterFunction: after LoadFunctions every master holds the
// library, and tslm_publish works on a channel of each master, its
// entries delivered to a follower whose poll is an hour away.
func testClusterFunction(t *testing.T, c *redistest.Cluster, client redis.UniversalClient, r *backlog.Redis, prefix string) {
	ctx := testContext(t)
	if err := r.LoadFunctions(ctx); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Masters() {
		libs, err := m.Client().FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: backlog.FunctionLibrary}).Result()
		if err != nil || len(libs) != 1 {
			t.Fatalf("master %s: libraries %v, %v; want %s", m.Addr(), libs, err, backlog.FunctionLibrary)
		}
	}
	f := r.NewFollower()
	defer f.Close()
	for _, ch := range channelOnEach(t, c, prefix, "fn") {
		create(t, ctx, r, ch, backlog.ChannelConfig{})
		head := appendN(t, ctx, r, ch, 1)[0]
		f.Follow(ch, head)
		collect(t, ctx, f, ch, 1, 10*time.Second, appendN(t, ctx, r, ch, 1)...)
		var want []backlog.ID
		for i := range 3 {
			want = append(want, fcall(t, ctx, client, prefix, ch, fmt.Sprintf(`{"n":%d}`, i)))
		}
		collect(t, ctx, f, ch, len(want), 10*time.Second, want...)
	}
}
