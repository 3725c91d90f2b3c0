package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/redistest"
)

// The end-to-end tests of idempotent publishing, channel deletion and
// listing on Redis, and of TSLM_REDIS_PREFIX.

// listAll walks GET /v1/channels with limit and returns every name.
func (r *replica) listAll(t testing.TB, prefix string, limit int) []string {
	t.Helper()
	var all []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("the listing does not end")
		}
		q := url.Values{"limit": {fmt.Sprint(limit)}, "cursor": {cursor}, "prefix": {prefix}}
		status, body := r.api(t, http.MethodGet, "/v1/channels?"+q.Encode(), nil)
		if status != http.StatusOK {
			t.Fatalf("list: %d %v", status, body)
		}
		names, _ := body["channels"].([]any)
		if len(names) > limit {
			t.Fatalf("page of %d names, limit %d", len(names), limit)
		}
		for _, n := range names {
			all = append(all, n.(string))
		}
		if cursor, _ = body["cursor"].(string); cursor == "" {
			break
		}
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// publishKeyed publishes over HTTP with an Idempotency-Key and returns
// the status and answer.
func (r *replica) publishKeyed(t testing.TB, channel string, data any, key string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(data)
	req, err := http.NewRequest(http.MethodPost, r.apiURL+"/v1/channels/"+channel+"/messages", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	return resp.StatusCode, out
}

// TestRedisPrefixesIsolate: two gateways on one Redis with different
// TSLM_REDIS_PREFIX share nothing: not channels, not names, not messages.
func TestRedisPrefixesIsolate(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := startReplica(t, map[string]string{"TSLM_REDIS_URL": srv.URL(), "TSLM_REDIS_PREFIX": "appA:"})
	b := startReplica(t, map[string]string{"TSLM_REDIS_URL": srv.URL(), "TSLM_REDIS_PREFIX": "appB:"})
	a.create(t, "shared", map[string]any{"max_len": 5})
	a.create(t, "only-a", nil)
	if status, body := b.api(t, http.MethodGet, "/v1/channels/shared", nil); status != http.StatusNotFound {
		t.Fatalf("B sees A's channel: %d %v", status, body)
	}
	b.create(t, "shared", map[string]any{"max_len": 7}) // 201: a channel of B's own

	subA, subB := dial(t, a.publicURL), dial(t, b.publicURL)
	subA.subscribe("shared", nil)
	subB.subscribe("shared", nil)
	idA, idB := a.publish(t, "shared", "for A"), b.publish(t, "shared", "for B")
	sameIDs(t, "A's subscriber", subA.messages("shared", 1), []string{idA})
	sameIDs(t, "B's subscriber", subB.messages("shared", 1), []string{idB})

	if got := a.listAll(t, "", 1); !slices.Equal(got, []string{"only-a", "shared"}) {
		t.Errorf("A lists %v", got)
	}
	if got := b.listAll(t, "", 1); !slices.Equal(got, []string{"shared"}) {
		t.Errorf("B lists %v", got)
	}
	_, body := b.api(t, http.MethodGet, "/v1/channels/shared", nil)
	if body["max_len"] != float64(7) || body["length"] != float64(1) {
		t.Errorf("B's channel: %v", body)
	}
	rdb := srv.Client()
	for key, want := range map[string]int64{"appA:meta:{only-a}": 1, "appB:meta:{only-a}": 0, "tslm:meta:{shared}": 0} {
		if n, err := rdb.Exists(t.Context(), key).Result(); err != nil || n != want {
			t.Errorf("EXISTS %s = %d, %v; want %d", key, n, err, want)
		}
	}
}

// TestRedisIdempotentPublishAcrossReplicas: a retry may land on another
// replica, over another transport; it still gets the first ID, and the
// stream holds the message once.
func TestRedisIdempotentPublishAcrossReplicas(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, nil)
	a, b := rs[0], rs[1]
	a.create(t, "orders", nil)
	status, first := a.publishKeyed(t, "orders", map[string]any{"order": 1}, "order-1")
	if status != http.StatusCreated || first["duplicate"] != false {
		t.Fatalf("first publish: %d %v", status, first)
	}
	status, again := b.publishKeyed(t, "orders", map[string]any{"order": 1}, "order-1")
	if status != http.StatusOK || again["duplicate"] != true || again["id"] != first["id"] {
		t.Fatalf("retry on B: %d %v, want 200 duplicate of %v", status, again, first["id"])
	}
	pub := dial(t, b.internalURL)
	pub.send(map[string]any{"type": "publish", "ref": "r", "channel": "orders", "data": 1, "idempotency_key": "order-1"})
	pub.expect(map[string]any{"type": "ack", "id": first["id"], "duplicate": true})
	if ids := streamIDs(t, srv.Client(), "orders"); !slices.Equal(ids, []string{first["id"].(string)}) {
		t.Fatalf("stream holds %v, want only %v", ids, first["id"])
	}
}

// TestRedisDeleteReachesEveryReplica: a channel deleted through replica A
// ends subscriptions on every replica with the documented frame, whatever
// the protocol; the name can then be created again, and an ID of the old
// channel does not resume on the new one.
func TestRedisDeleteReachesEveryReplica(t *testing.T) {
	_, rs := startRedis(t, redistest.Options{}, 2, nil)
	a, b := rs[0], rs[1]
	a.create(t, "room", nil)
	subs := []*client{dial(t, a.publicURL), dial(t, b.publicURL)}
	for _, c := range subs {
		c.subscribe("room", nil)
	}
	d := websocket.Dialer{Subprotocols: []string{"tslm.legacy"}}
	legacy, _, err := d.Dial(b.publicURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	lc := &client{t: t, conn: legacy}
	lc.send(map[string]any{"Subscribe": "room"})
	lc.expect(map[string]any{"Success": "Subscribed to room"})
	last := a.publish(t, "room", 1)
	for _, c := range subs {
		sameIDs(t, "before the delete", c.messages("room", 1), []string{last})
	}
	lc.read()

	if status, body := a.api(t, http.MethodDelete, "/v1/channels/room", nil); status != http.StatusOK || body["deleted"] != true {
		t.Fatalf("delete: %d %v", status, body)
	}
	for _, c := range subs {
		c.expect(map[string]any{"type": "deleted", "channel": "room"})
	}
	lc.expect(map[string]any{"Error": "deleted: channel room was deleted"})
	if status, _ := b.api(t, http.MethodDelete, "/v1/channels/room", nil); status != http.StatusNotFound {
		t.Errorf("second delete: %d, want 404", status)
	}
	if got := a.listAll(t, "", 10); len(got) != 0 {
		t.Errorf("listed after the delete: %v", got)
	}

	b.create(t, "room", nil)
	fresh := a.publish(t, "room", 2)
	for i, c := range subs {
		ack := c.subscribe("room", map[string]any{"since": last})
		if ack["resumed"] != false {
			t.Fatalf("subscriber %d resumed from the deleted channel: %v", i, ack)
		}
		sameIDs(t, "the new channel", c.messages("room", 1), []string{fresh})
	}
}
