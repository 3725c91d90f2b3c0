package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/redistest"
)

// TestRedisConnectionsDoNotGrowWithChannels: a hub following many
// channels holds one pub/sub connection to Redis, subscribed once per
// channel, and a few pooled ones; leaving channels unsubscribes them. The
// poll interval is an hour, so every message here comes by notification
// or by the catch-up after a subscription, never by the safety poll.
func TestRedisConnectionsDoNotGrowWithChannels(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rdb := srv.Client()
	log := backlog.NewRedis(srv.Client(), backlog.RedisConfig{KeyPrefix: "conns:", PollInterval: time.Hour})
	h := broker.New(log, broker.Config{})
	t.Cleanup(func() { h.Close(); log.Close() })
	ctx := t.Context()

	const channels = 500
	recs := make([]*recorder, channels)
	var subs []*broker.Subscription
	for i := range channels {
		ch := fmt.Sprintf("c%d", i)
		create(t, h, ch, 10)
		recs[i] = newRecorder()
		sub, _ := subscribe(t, h, ch, broker.From{}, recs[i])
		subs = append(subs, sub)
	}
	waitNumsub := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, err := rdb.Do(ctx, "PUBSUB", "SHARDNUMSUB", "conns:n:{c0}", fmt.Sprintf("conns:n:{c%d}", channels-1)).Slice()
			got := -1
			if err == nil && len(n) == 4 {
				a, _ := n[1].(int64)
				b, _ := n[3].(int64)
				got = int(a + b)
			}
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("subscribers of the first and last channels: %d (%v), want %d", got, err, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitNumsub(2)
	// Twice: a channel followed from 0-0 reads its first entry (nothing
	// else proves a cursor 0-0), and takes the next from its notification.
	for round := 1; round <= 2; round++ {
		for i := range channels {
			ids := publish(t, h, fmt.Sprintf("c%d", i), 1)
			checkSequence(t, recs[i].waitFor(t, round)[round-1:], ids)
		}
	}
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The test's own client holds one; the rest are the hub's.
	var total, pubsub int
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		total++
		if strings.Contains(line, " sub=0 psub=0 ssub=") && !strings.Contains(line, " ssub=0 ") {
			pubsub++
		}
	}
	if pubsub != 1 {
		t.Errorf("%d pub/sub connections for %d channels, want 1:\n%s", pubsub, channels, list)
	}
	if st := log.FollowerStats(); st.PubSubConnections != 1 || st.Subscriptions != channels || st.Notified < channels {
		t.Errorf("follower stats %+v, want 1 connection, %d subscriptions, at least %d notified", st, channels, channels)
	}
	if total > 20 {
		t.Errorf("%d connections to Redis for %d channels, want a few:\n%s", total, channels, list)
	}
	for _, s := range subs {
		s.Close()
	}
	waitNumsub(0)
	if st := log.FollowerStats(); st.Subscriptions != 0 {
		t.Errorf("%d subscriptions left after every subscriber left", st.Subscriptions)
	}
}
