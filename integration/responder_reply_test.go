package integration

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/responder"
)

// serveRedisEcho runs responder.ServeRedis on srv, answering
// requests to channel with their data, until the test ends.
func serveRedisEcho(t *testing.T, srv *redistest.Server, channel string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	wg.Go(func() {
		echo := func(_ context.Context, r responder.Request) (json.RawMessage, error) { return r.Data, nil }
		if err := responder.ServeRedis(ctx, responder.RedisConfig{Client: srv.Client()}, echo, channel); err != nil {
			t.Errorf("ServeRedis: %v", err)
		}
	})
}

// TestResponderReplyNotified: a reply written by responder.ServeRedis
// reaches the WebSocket requester by the notification of the gateway's own
// append (tslm_publish): the replica's poll is an hour away, so a reply
// that waited for it would not come within the client's read timeout.
func TestResponderReplyNotified(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 1, withEnv(requestAllow, map[string]string{"TSLM_POLL_INTERVAL": "1h"}))
	rs[0].create(t, "orders", nil)
	serveRedisEcho(t, srv, "orders")
	cl := dial(t, rs[0].publicURL)
	for _, ref := range []string{"r1", "r2"} {
		id, _ := cl.requestAcked(ref, "orders", map[string]any{"ref": ref}, 20000)
		rep := cl.expect(map[string]any{"type": "reply", "ref": ref, "channel": "orders", "id": id})
		jsonEqual(t, "reply data", rep["data"], `{"ref":"`+ref+`"}`)
	}
}

// TestResponderReplyWithoutFunction: on a Redis without tslm_publish (no
// gateway could load it), the responder's replies still reach the
// requester: appended plainly, they come with the replica's poll, short
// here.
func TestResponderReplyWithoutFunction(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 1, withEnv(requestAllow, map[string]string{"TSLM_POLL_INTERVAL": "200ms"}))
	if err := srv.Client().FunctionDelete(t.Context(), backlog.FunctionLibrary).Err(); err != nil {
		t.Fatal(err)
	}
	rs[0].create(t, "orders", nil)
	serveRedisEcho(t, srv, "orders")
	cl := dial(t, rs[0].publicURL)
	id, _ := cl.requestAcked("r1", "orders", []any{"no", "function"}, 20000)
	rep := cl.expect(map[string]any{"type": "reply", "ref": "r1", "channel": "orders", "id": id})
	jsonEqual(t, "reply data", rep["data"], `["no","function"]`)
}
