package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// start runs the example until the test ends, and returns what run
// returned when it does.
func start(t *testing.T, channels []string, vars map[string]string) (stop func() error) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, channels, env(vars)) }()
	finished := false
	var err error
	stop = func() error {
		cancel()
		if !finished {
			select {
			case err = <-done:
				finished = true
			case <-time.After(10 * time.Second):
				t.Fatal("echo-responder did not stop within 10s of its context's end")
			}
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func TestUsageAndBadEnvironment(t *testing.T) {
	cases := []struct {
		channels []string
		vars     map[string]string
		want     string
	}{
		{nil, nil, "usage"},
		{[]string{"-h"}, nil, "usage"},
		{[]string{"orders"}, map[string]string{"TSLM_LOG_LEVEL": "loud"}, "TSLM_LOG_LEVEL"},
		{[]string{"orders"}, map[string]string{"TSLM_REDIS_URL": "nope://x"}, "TSLM_REDIS_URL"},
		{[]string{"orders"}, map[string]string{"TSLM_REDIS_URL": "redis://127.0.0.1:1", "TSLM_REDIS_PREFIX": ""}, "TSLM_REDIS_PREFIX"},
		{[]string{"bad name"}, nil, "channel name"},
	}
	for _, c := range cases {
		err := run(t.Context(), c.channels, env(c.vars))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%q, %v) = %v, want an error mentioning %s", c.channels, c.vars, err, c.want)
		}
	}
}

// TestEchoRedis: with TSLM_REDIS_URL and TSLM_REDIS_PREFIX, a request
// entry written as docs/redis.md describes is answered with its own data.
func TestEchoRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	echoRedis(t, srv.URL(), srv.Client())
}

// TestEchoRedisSentinel: the same through a Sentinel URL, which the
// gateway takes too.
func TestEchoRedisSentinel(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	echoRedis(t, s.URL(), s.Client())
}

func echoRedis(t *testing.T, url string, rdb *redis.Client) {
	ctx := t.Context()
	const prefix, inbox = "echo:", "_inbox.00112233445566778899aabbccddeeff"
	for _, ch := range []string{"orders", inbox} {
		if err := rdb.HSet(ctx, prefix+"meta:{"+ch+"}", "max_len", 1000, "retention_ms", 0, "created_ms", time.Now().UnixMilli()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	inboxKey := prefix + "ch:{" + inbox + "}"
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: inboxKey, Values: []any{"data", "0"}}).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.XTrimMaxLen(ctx, inboxKey, 0)
	id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: prefix + "req:{orders}", Values: []any{
		"reply_to", inbox, "deadline_ms", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10), "data", `{"hello":"world"}`,
	}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, []string{"orders"}, map[string]string{"TSLM_REDIS_URL": url, "TSLM_REDIS_PREFIX": prefix})

	var got []redis.XMessage
	for deadline := time.Now().Add(10 * time.Second); len(got) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no reply in the inbox within 10s")
		}
		if got, err = rdb.XRange(ctx, inboxKey, "-", "+").Result(); err != nil {
			t.Fatal(err)
		}
	}
	want := `{"channel":"orders","id":"` + id + `","data":{"hello":"world"}}`
	if len(got) != 1 || got[0].Values["data"] != want {
		t.Errorf("inbox = %+v, want one entry with data %s", got, want)
	}
	if err := stop(); err != nil {
		t.Errorf("run = %v, want nil after the context ends", err)
	}
}

// TestEchoWebSocket: without TSLM_REDIS_URL, the example serves through
// TSLM_INTERNAL_URL and echoes a request frame's data.
func TestEchoWebSocket(t *testing.T) {
	conns := make(chan *websocket.Conn, 1)
	authorization := make(chan string, 1)
	up := websocket.Upgrader{Subprotocols: []string{"tslm.v1"}}
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authorization <- r.Header.Get("Authorization")
		if c, err := up.Upgrade(w, r, nil); err == nil {
			conns <- c
		}
	}))
	t.Cleanup(gw.Close)
	stop := start(t, []string{"orders"}, map[string]string{
		"TSLM_INTERNAL_URL": "ws" + strings.TrimPrefix(gw.URL, "http") + "/v1/ws",
		"TSLM_CREDENTIAL":   "k3y",
	})

	var c *websocket.Conn
	select {
	case c = <-conns:
		t.Cleanup(func() { c.Close() })
	case <-time.After(10 * time.Second):
		t.Fatal("echo-responder did not connect")
	}
	if got := <-authorization; got != "Bearer k3y" {
		t.Errorf("Authorization %q, want the credential as a bearer", got)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var serve map[string]any
	if err := c.ReadJSON(&serve); err != nil || serve["type"] != "serve" || serve["channel"] != "orders" {
		t.Fatalf("first frame %v, %v; want serve orders", serve, err)
	}
	c.WriteJSON(map[string]any{"type": "ack", "ref": serve["ref"], "channel": "orders"})
	c.WriteJSON(map[string]any{"type": "request", "channel": "orders", "id": "7-0", "data": map[string]any{"n": 7},
		"deadline_ms": time.Now().Add(time.Minute).UnixMilli(), "deliveries": 1})
	var reply struct {
		Type, Channel, ID string
		Data              json.RawMessage
	}
	if err := c.ReadJSON(&reply); err != nil || reply.Type != "reply" || reply.ID != "7-0" || string(reply.Data) != `{"n":7}` {
		t.Errorf("reply %+v, %v; want the request's data", reply, err)
	}
	if err := stop(); err != nil {
		t.Errorf("run = %v, want nil after the context ends", err)
	}
}
