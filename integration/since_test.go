package integration

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// TestSinceAgreesAcrossTransports runs one table of since positions against
// the HTTP read and a WebSocket subscribe, on the in-memory and the Redis
// backlog: both must return the same messages and the same proof
// (continuous / resumed). Whatever the backlog cannot prove starts from
// the oldest message held.
func TestSinceAgreesAcrossTransports(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		testSince(t, startReplica(t, nil))
	})
	t.Run("redis", func(t *testing.T) {
		_, rs := startRedis(t, redistest.Options{}, 1, nil)
		testSince(t, rs[0])
	})
}

func testSince(t *testing.T, r *replica) {
	// trimmed holds ids[2:] of five (max_len 3), with room for an ID
	// between ids[3] and ids[4] that was never a message.
	r.create(t, "trimmed", map[string]any{"max_len": 3})
	var ids []string
	for i := range 5 {
		if i == 4 {
			waitNextMillisecond(t, ids[3])
		}
		ids = append(ids, r.publish(t, "trimmed", i))
	}
	r.create(t, "whole", nil)
	whole := []string{r.publish(t, "whole", "a"), r.publish(t, "whole", "b")}
	r.create(t, "empty", nil)

	id := func(s string) backlog.ID {
		t.Helper()
		v, err := backlog.ParseID(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	between := id(ids[3]).Next()
	beyond := backlog.ID{Ms: id(ids[4]).Ms + 1000}
	held := ids[2:]
	tests := []struct {
		name, channel, since string
		want                 []string
		proved               bool
	}{
		{"trimmed before the oldest held", "trimmed", ids[0], held, false},
		{"trimmed just before the oldest held", "trimmed", ids[1], held, false},
		{"a held id", "trimmed", ids[3], ids[4:], true},
		{"the newest id", "trimmed", ids[4], nil, true},
		{"between held ids, never held", "trimmed", between.String(), held, false},
		{"beyond the newest", "trimmed", beyond.String(), held, false},
		{"0-0 on a trimmed channel", "trimmed", "0-0", held, false},
		{"0-0 on a never-trimmed channel", "whole", "0-0", whole, true},
		{"before the first on a never-trimmed channel", "whole", "1-0", whole, false},
		{"0-0 on an empty channel", "empty", "0-0", nil, true},
		{"an id on an empty channel", "empty", ids[0], nil, false},
	}
	c := dial(t, r.internalURL)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := r.api(t, http.MethodGet, "/v1/channels/"+tt.channel+"/messages?limit=1000&since="+tt.since, nil)
			if status != http.StatusOK {
				t.Fatalf("HTTP: %d %v", status, body)
			}
			var got []string
			for _, m := range body["messages"].([]any) {
				got = append(got, m.(map[string]any)["id"].(string))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || body["continuous"] != tt.proved {
				t.Errorf("HTTP: %v continuous %v, want %v continuous %v", got, body["continuous"], tt.want, tt.proved)
			}

			ack := c.subscribe(tt.channel, map[string]any{"since": tt.since})
			// The replay is sent before the next command is answered, so
			// everything before the unsubscribe's ack is the replay.
			c.send(map[string]any{"type": "unsubscribe", "ref": "u", "channel": tt.channel})
			got = nil
			for f := c.read(); f["ref"] != "u"; f = c.read() {
				if f["type"] != "message" || f["channel"] != tt.channel {
					t.Fatalf("WebSocket: got %v during the replay", f)
				}
				got = append(got, f["id"].(string))
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || ack["resumed"] != tt.proved {
				t.Errorf("WebSocket: %v resumed %v, want %v resumed %v", got, ack["resumed"], tt.want, tt.proved)
			}
		})
	}
}

// waitNextMillisecond returns once the clock is past the millisecond of
// id, so that the next message's ID leaves room for one between them. The
// backlogs here (memory, a local redis-server) share the test's clock.
func waitNextMillisecond(t *testing.T, id string) {
	t.Helper()
	v, err := backlog.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the clock did not move", func() bool {
		return uint64(time.Now().UnixMilli()) > v.Ms
	})
}
