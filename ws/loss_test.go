package ws

import (
	"context"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/backlog/backlogtest"
	"github.com/tslm/tslm/internal/redistest"
)

// TestResumeAfterLostEntries: the newest entries of a channel are lost, as
// in a Redis failover that lost writes not yet replicated. A client
// resuming after them is told resumed:false, gets what is held, and then
// the next message with no gap frame before it: its ack reported the loss.
// A client that received them live is told of the gap. On both backlogs.
func TestResumeAfterLostEntries(t *testing.T) {
	backends := []struct {
		name  string
		start func(t *testing.T) (*testServer, func(channel string, n int))
	}{
		{"memory", func(t *testing.T) (*testServer, func(string, int)) {
			var lossy *backlogtest.Lossy
			ts := startServerWith(t, Config{}, serverOptions{wrap: func(m *backlog.Memory) backlog.Log {
				lossy = backlogtest.NewLossy(m)
				return lossy
			}})
			return ts, func(channel string, n int) {
				if _, err := lossy.LoseNewest(context.Background(), channel, n); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"redis", func(t *testing.T) (*testServer, func(string, int)) {
			srv := redistest.Start(t, redistest.Options{})
			log := backlog.NewRedis(srv.Client(), backlog.RedisConfig{PollInterval: time.Second})
			t.Cleanup(func() { log.Close() })
			ts := startServerWith(t, Config{}, serverOptions{wrap: func(*backlog.Memory) backlog.Log { return log }})
			rdb := srv.Client()
			return ts, func(channel string, n int) {
				ctx := context.Background()
				key := "tslm:ch:{" + channel + "}"
				entries, err := rdb.XRevRangeN(ctx, key, "+", "-", int64(n)).Result()
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					if err := rdb.XDel(ctx, key, e.ID).Err(); err != nil {
						t.Fatal(err)
					}
				}
			}
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ts, lose := b.start(t)
			ts.create(t, "f", 0)
			live := ts.dial(t)
			live.subscribe("f", nil)
			ids := ts.publish(t, "f", 5)
			if got := live.messages("f", 5); got[4] != ids[4] {
				t.Fatalf("live client got %v, want %v", got, ids)
			}
			lose("f", 2)

			c := ts.dial(t)
			c.send(map[string]any{"type": "subscribe", "ref": "s", "channel": "f", "since": ids[4]})
			c.expect(map[string]any{"type": "ack", "ref": "s", "channel": "f", "head": ids[4], "resumed": false})
			for i, id := range ids[:3] {
				c.expect(map[string]any{"type": "message", "channel": "f", "id": id, "data": map[string]any{"i": i}})
			}
			time.Sleep(2 * time.Millisecond) // so that next is not the lost ID's successor
			next := ts.publish(t, "f", 1)[0]
			c.expect(map[string]any{"type": "message", "channel": "f", "id": next, "data": map[string]any{"i": 0}})

			live.expect(map[string]any{"type": "gap", "channel": "f", "after": ids[4]})
			live.expect(map[string]any{"type": "message", "channel": "f", "id": next, "data": map[string]any{"i": 0}})
		})
	}
}
