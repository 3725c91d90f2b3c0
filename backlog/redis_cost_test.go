package backlog_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// sentBytes is INFO stats' total_net_output_bytes: every byte Redis wrote
// to its clients.
func sentBytes(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(t.Context(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_net_output_bytes:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("INFO stats has no total_net_output_bytes")
	return 0
}

// TestRedisLookupsSendNoPayload: the calls a subscribe makes that return no
// message (Info, a Range that finds nothing new, with its proof from an ID
// and from Zero, TailStart, Before) cost Redis a few small replies however
// large the channel's messages are (issue 18: Info once carried XINFO
// STREAM's first and last entries). Bytes, not time: the figure does not
// depend on the machine.
func TestRedisLookupsSendNoPayload(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := testContext(t)
	stats := srv.Client()
	r := newRedis(t, srv, backlog.RedisConfig{})
	big := []byte(`"` + strings.Repeat("x", 60<<10) + `"`)
	create(t, ctx, r, "big", backlog.ChannelConfig{})
	var ids []backlog.ID
	for range 3 {
		id, err := r.Append(ctx, "big", big)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	// A channel trimmed: a Range from Zero returns its one message, and
	// its proof by XINFO STREAM must not come back whole.
	create(t, ctx, r, "trimmed", backlog.ChannelConfig{MaxLen: 1})
	for range 2 {
		if _, err := r.Append(ctx, "trimmed", big); err != nil {
			t.Fatal(err)
		}
	}
	overhead := -sentBytes(t, stats) + sentBytes(t, stats) // one INFO reply
	const within = 1 << 10
	// Each call returns the payload bytes it had to send: a message it
	// returns.
	for _, c := range []struct {
		name string
		call func() (int, error)
	}{
		{"Info", func() (int, error) {
			info, err := r.Info(ctx, "big")
			if err == nil && (info.Length != 3 || info.FirstID != ids[0] || info.LastID != ids[2]) {
				t.Errorf("Info = %+v, want 3 messages from %v to %v", info, ids[0], ids[2])
			}
			return 0, err
		}},
		{"Range after the newest", func() (int, error) {
			page, err := r.Range(ctx, "big", ids[2], 10)
			if err == nil && (len(page.Messages) != 0 || !page.Continuous) {
				t.Errorf("Range after the newest = %d messages, continuous %v; want none, continuous", len(page.Messages), page.Continuous)
			}
			return 0, err
		}},
		{"Range from Zero", func() (int, error) {
			page, err := r.Range(ctx, "trimmed", backlog.Zero, 10)
			if err == nil && (len(page.Messages) != 1 || page.Continuous) {
				t.Errorf("Range from Zero of a trimmed channel = %d messages, continuous %v; want 1, not continuous", len(page.Messages), page.Continuous)
			}
			return len(big), err
		}},
		{"TailStart", func() (int, error) {
			id, err := r.TailStart(ctx, "big", 2)
			if err == nil && id != ids[1] {
				t.Errorf("TailStart(2) = %v, want %v", id, ids[1])
			}
			return 0, err
		}},
		{"Before", func() (int, error) {
			prev, held, err := r.Before(ctx, "big", ids[2])
			if err == nil && (!held || prev != ids[1]) {
				t.Errorf("Before(%v) = %v, %v; want %v, true", ids[2], prev, held, ids[1])
			}
			return 0, err
		}},
	} {
		for _, flushed := range []bool{false, true} {
			if flushed {
				// As after a restart: the scripts must be loaded again.
				if err := stats.ScriptFlush(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			before := sentBytes(t, stats)
			payload, err := c.call()
			if flushed {
				// Range's pipeline runs again once the proof is loaded,
				// its read included: once per script loss.
				payload *= 2
			}
			if err != nil {
				t.Fatalf("%s (scripts flushed: %v): %v", c.name, flushed, err)
			}
			if sent := sentBytes(t, stats) - before - overhead; sent > int64(payload+within) {
				t.Errorf("%s (scripts flushed: %v): Redis sent %d bytes, want at most %d besides %d of payload", c.name, flushed, sent, within, payload)
			}
		}
	}
}
