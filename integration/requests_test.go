package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/responder"
)

// The end-to-end tests of requests and correlated replies (issue 14):
// public clients ask, internal apps answer, either over the internal
// WebSocket or straight through Redis with the commands docs/redis.md
// gives, and replies reach the client exactly once, across reconnects to
// another replica.

// requestAllow lets public clients send requests besides subscribing.
var requestAllow = map[string]string{"TSLM_PUBLIC_ALLOW": "subscribe,request"}

func withEnv(base map[string]string, more map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(more))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// request sends a request frame; timeoutMs 0 leaves timeout_ms out.
func (c *client) request(ref, channel string, data any, timeoutMs int) {
	c.t.Helper()
	f := map[string]any{"type": "request", "ref": ref, "channel": channel, "data": data}
	if timeoutMs != 0 {
		f["timeout_ms"] = timeoutMs
	}
	c.send(f)
}

// requestAcked sends a request and returns its ID and the session token
// from the ack.
func (c *client) requestAcked(ref, channel string, data any, timeoutMs int) (id, token string) {
	c.t.Helper()
	c.request(ref, channel, data, timeoutMs)
	ack := c.expect(map[string]any{"type": "ack", "ref": ref, "channel": channel})
	id, _ = ack["id"].(string)
	token, _ = ack["session"].(string)
	if id == "" || len(token) < 22 { // 22 base64 characters hold 128 bits
		c.t.Fatalf("request ack %v: want an id and a session token of at least 128 bits", ack)
	}
	return id, token
}

// serve makes c an app serving channel.
func (c *client) serve(channel string) {
	c.t.Helper()
	c.send(map[string]any{"type": "serve", "ref": "serve-" + channel, "channel": channel})
	c.expect(map[string]any{"type": "ack", "ref": "serve-" + channel, "channel": channel})
}

// quiet fails the test if a frame arrives within d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	if f, err := c.next(d); err == nil {
		c.t.Fatalf("unexpected frame %v", f)
	}
}

func jsonEqual(t testing.TB, what string, got any, want string) {
	t.Helper()
	g, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	json.Unmarshal(g, &a)
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("%s = %s, want %s", what, g, want)
	}
}

func TestRequestRoundTrip(t *testing.T) {
	for _, backend := range []string{"memory", "redis"} {
		t.Run("backlog="+backend, func(t *testing.T) {
			env := requestAllow
			if backend == "redis" {
				srv := redistest.Start(t, redistest.Options{})
				env = withEnv(env, map[string]string{"TSLM_REDIS_URL": srv.URL()})
			}
			r := startReplica(t, env)
			r.create(t, "orders", nil)
			app := dial(t, r.internalURL)
			app.serve("orders")
			cl := dial(t, r.publicURL)

			id, _ := cl.requestAcked("r1", "orders", map[string]any{"item": "tea", "n": 2}, 0)
			req := app.expect(map[string]any{"type": "request", "channel": "orders", "id": id, "deliveries": 1})
			jsonEqual(t, "served data", req["data"], `{"item":"tea","n":2}`)
			if dl, _ := req["deadline_ms"].(float64); int64(dl) < time.Now().UnixMilli() {
				t.Fatalf("request %v: deadline_ms not in the future", req)
			}
			app.send(map[string]any{"type": "reply", "ref": "a1", "channel": "orders", "id": id, "data": map[string]any{"ok": true}})
			app.expect(map[string]any{"type": "ack", "ref": "a1", "channel": "orders", "id": id})
			rep := cl.expect(map[string]any{"type": "reply", "ref": "r1", "channel": "orders", "id": id})
			jsonEqual(t, "reply data", rep["data"], `{"ok":true}`)

			// A refusal reaches the client as the reply's error, not as silence.
			id2, _ := cl.requestAcked("r2", "orders", "none left?", 0)
			app.expect(map[string]any{"type": "request", "id": id2})
			app.send(map[string]any{"type": "reply", "ref": "a2", "channel": "orders", "id": id2,
				"error": map[string]any{"code": "out_of_stock", "message": "no tea left"}})
			app.expect(map[string]any{"type": "ack", "ref": "a2"})
			rep = cl.expect(map[string]any{"type": "reply", "ref": "r2", "id": id2})
			jsonEqual(t, "refusal", rep["error"], `{"code":"out_of_stock","message":"no tea left"}`)
			if _, ok := rep["data"]; ok {
				t.Fatalf("refusal %v carries data", rep)
			}

			// Answering again changes nothing for the client.
			app.send(map[string]any{"type": "reply", "ref": "a3", "channel": "orders", "id": id2, "data": 1})
			app.expect(map[string]any{"type": "error", "ref": "a3", "code": "not_found"})
			cl.quiet(300 * time.Millisecond)
		})
	}
}

// redisWorker answers requests the way docs/redis.md tells apps in any
// language to: raw commands only.
type redisWorker struct {
	t        testing.TB
	c        *redis.Client
	group    string
	consumer string
}

type rawRequest struct {
	id, replyTo, data string
	deadline          int64
}

// claim reads up to n new requests of channel, waiting up to 5s.
func (w *redisWorker) claim(channel string, n int) []rawRequest {
	w.t.Helper()
	ctx := w.t.Context()
	key := "tslm:req:{" + channel + "}"
	if err := w.c.Do(ctx, "XGROUP", "CREATE", key, w.group, "0").Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		w.t.Fatalf("XGROUP CREATE: %v", err)
	}
	res, err := w.c.Do(ctx, "XREADGROUP", "GROUP", w.group, w.consumer, "COUNT", n, "BLOCK", 5000, "STREAMS", key, ">").Result()
	if err != nil {
		w.t.Fatalf("XREADGROUP: %v", err)
	}
	var out []rawRequest
	for _, stream := range res.(map[any]any) {
		for _, e := range stream.([]any) {
			entry := e.([]any)
			fields := entry[1].([]any)
			r := rawRequest{id: entry[0].(string)}
			for i := 0; i+1 < len(fields); i += 2 {
				v := fields[i+1].(string)
				switch fields[i] {
				case "reply_to":
					r.replyTo = v
				case "data":
					r.data = v
				case "deadline_ms":
					fmt.Sscan(v, &r.deadline)
				}
			}
			out = append(out, r)
		}
	}
	return out
}

// reply appends the envelope to the request's inbox, then acks.
func (w *redisWorker) reply(channel string, r rawRequest, envelope string) {
	w.t.Helper()
	ctx := w.t.Context()
	if err := w.c.Do(ctx, "XADD", "tslm:ch:{"+r.replyTo+"}", "NOMKSTREAM", "MAXLEN", "~", 1000, "*", "data", envelope).Err(); err != nil {
		w.t.Fatalf("XADD reply: %v", err)
	}
	if err := w.c.Do(ctx, "XACK", "tslm:req:{"+channel+"}", w.group, r.id).Err(); err != nil {
		w.t.Fatalf("XACK: %v", err)
	}
}

func echoEnvelope(channel string, r rawRequest) string {
	return fmt.Sprintf(`{"channel":%q,"id":%q,"data":%s}`, channel, r.id, r.data)
}

func TestRequestAnsweredWithRawRedisCommands(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 1, requestAllow)
	r := rs[0]
	r.create(t, "orders", nil)
	cl := dial(t, r.publicURL)
	id, _ := cl.requestAcked("r1", "orders", map[string]any{"q": "status"}, 5000)

	w := &redisWorker{t: t, c: srv.Client(), group: "billing", consumer: "w1"}
	reqs := w.claim("orders", 10)
	if len(reqs) != 1 || reqs[0].id != id {
		t.Fatalf("claimed %+v, want the one request %s", reqs, id)
	}
	if !strings.HasPrefix(reqs[0].replyTo, "_inbox.") || reqs[0].deadline <= time.Now().UnixMilli() {
		t.Fatalf("request entry %+v: want an _inbox. reply address and a future deadline", reqs[0])
	}
	jsonEqual(t, "request data", json.RawMessage(reqs[0].data), `{"q":"status"}`)
	w.reply("orders", reqs[0], echoEnvelope("orders", reqs[0]))
	rep := cl.expect(map[string]any{"type": "reply", "ref": "r1", "channel": "orders", "id": id})
	jsonEqual(t, "reply data", rep["data"], `{"q":"status"}`)

	if n, err := srv.Client().XPending(t.Context(), "tslm:req:{orders}", "billing").Result(); err != nil || n.Count != 0 {
		t.Fatalf("XPENDING after XACK: %+v, %v; want nothing pending", n, err)
	}
	// The session token never reaches Redis: only its hash names the inbox.
	keys, err := srv.Client().Keys(t.Context(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	_, token := cl.requestAcked("r2", "orders", 1, 5000)
	for _, k := range keys {
		if strings.Contains(k, token) {
			t.Fatalf("key %q holds the session token", k)
		}
	}
}

// TestRequestReplyAfterReconnectToAnotherReplica is the session contract:
// the client asks through replica A, loses its connection, resumes its
// session on replica B, and gets the reply there exactly once, whether the
// reply was written before or after it resumed.
func TestRequestReplyAfterReconnectToAnotherReplica(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, requestAllow)
	a, b := rs[0], rs[1]
	a.create(t, "orders", nil)
	w := &redisWorker{t: t, c: srv.Client(), group: "tslm", consumer: "w1"}

	clA := dial(t, a.publicURL)
	early, token := clA.requestAcked("r1", "orders", "answered while away", 10000)
	late, token2 := clA.requestAcked("r2", "orders", "answered after resume", 10000)
	if token2 != token {
		t.Fatalf("second ack's session %q, want the first one's", token2)
	}
	reqs := w.claim("orders", 2)
	if len(reqs) != 2 {
		t.Fatalf("claimed %d requests, want 2", len(reqs))
	}
	clA.conn.Close()
	// Written while the client is away, twice, as a reclaimed request
	// answered by two workers would be.
	w.reply("orders", reqs[0], echoEnvelope("orders", reqs[0]))
	w.reply("orders", reqs[0], fmt.Sprintf(`{"channel":"orders","id":%q,"data":"second answer"}`, reqs[0].id))

	clB := dial(t, b.publicURL)
	clB.send(map[string]any{"type": "session", "ref": "s1", "session": token, "pending": []any{
		map[string]any{"channel": "orders", "id": early, "ref": "r1"},
		map[string]any{"channel": "orders", "id": late, "ref": "r2"},
	}})
	clB.expect(map[string]any{"type": "ack", "ref": "s1", "session": token})
	rep := clB.expect(map[string]any{"type": "reply", "ref": "r1", "channel": "orders", "id": early})
	jsonEqual(t, "reply written while away", rep["data"], `"answered while away"`)

	// Written after the client resumed on B.
	w.reply("orders", reqs[1], echoEnvelope("orders", reqs[1]))
	rep = clB.expect(map[string]any{"type": "reply", "ref": "r2", "id": late})
	jsonEqual(t, "reply written after resume", rep["data"], `"answered after resume"`)
	clB.quiet(500 * time.Millisecond)

	// A forged token and a well-formed unknown one are refused, with
	// documented codes, and leave the connection usable.
	clC := dial(t, b.publicURL)
	clC.send(map[string]any{"type": "session", "ref": "bad", "session": "not a token"})
	clC.expect(map[string]any{"type": "error", "ref": "bad", "code": "bad_request"})
	clC.send(map[string]any{"type": "session", "ref": "unknown", "session": strings.Repeat("A", len(token))})
	clC.expect(map[string]any{"type": "error", "ref": "unknown", "code": "not_found"})
	clC.requestAcked("r3", "orders", 3, 1000)
}

func TestRequestTimeout(t *testing.T) {
	r := startReplica(t, requestAllow)
	r.create(t, "orders", nil)
	cl := dial(t, r.publicURL)
	start := time.Now()
	id, _ := cl.requestAcked("r1", "orders", "anyone?", 300)
	cl.expect(map[string]any{"type": "error", "ref": "r1", "code": "timeout", "channel": "orders", "id": id})
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("timeout after %v, before the 300ms deadline", waited)
	}
	// The expired request is never handed to an app that serves later.
	app := dial(t, r.internalURL)
	app.serve("orders")
	app.quiet(1500 * time.Millisecond) // a read timeout ends a gorilla connection
	app.conn.Close()
	app = dial(t, r.internalURL)
	app.serve("orders")

	// A reply an app sends after the deadline does not follow the timeout.
	id2, _ := cl.requestAcked("r2", "orders", "slow", 400)
	app.expect(map[string]any{"type": "request", "id": id2})
	cl.expect(map[string]any{"type": "error", "ref": "r2", "code": "timeout", "id": id2})
	app.send(map[string]any{"type": "reply", "ref": "late", "channel": "orders", "id": id2, "data": "too late"})
	if f := app.read(); f["ref"] != "late" {
		t.Fatalf("app got %v, want an answer to its late reply", f)
	}
	cl.quiet(500 * time.Millisecond)
}

// TestServingAppKilledMidRequest: the app holding a request dies without
// answering; another app, on another replica, gets the request and its
// answer reaches the client once.
func TestServingAppKilledMidRequest(t *testing.T) {
	_, rs := startRedis(t, redistest.Options{}, 2, requestAllow)
	a, b := rs[0], rs[1]
	a.create(t, "orders", nil)
	app1 := dial(t, a.internalURL)
	app1.serve("orders")
	cl := dial(t, b.publicURL)
	id, _ := cl.requestAcked("r1", "orders", "work", 20000)
	app1.expect(map[string]any{"type": "request", "id": id, "deliveries": 1})

	app2 := dial(t, b.internalURL)
	app2.serve("orders")
	app1.conn.UnderlyingConn().Close() // killed: no close frame
	start := time.Now()
	req := app2.expect(map[string]any{"type": "request", "id": id, "deliveries": 2})
	t.Logf("request handed to the second app %v after the first died", time.Since(start))
	app2.send(map[string]any{"type": "reply", "ref": "a", "channel": "orders", "id": id, "data": req["data"]})
	app2.expect(map[string]any{"type": "ack", "ref": "a"})
	rep := cl.expect(map[string]any{"type": "reply", "ref": "r1", "id": id})
	jsonEqual(t, "reply", rep["data"], `"work"`)
	cl.quiet(500 * time.Millisecond)
}

// TestThousandConcurrentRequests: 100 clients on two replicas each keep 10
// requests in flight at once, answered by a Redis worker (the responder
// package) and a WebSocket app sharing the gateway's consumer group; every
// request gets its own answer, exactly once.
func TestThousandConcurrentRequests(t *testing.T) {
	const clients, perClient = 100, 10
	srv, rs := startRedis(t, redistest.Options{}, 2, withEnv(requestAllow, map[string]string{"TSLM_PUBLIC_RATE": "0"}))
	rs[0].create(t, "orders", nil)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	echo := func(_ context.Context, r responder.Request) (json.RawMessage, error) { return r.Data, nil }
	var workers sync.WaitGroup
	workers.Go(func() {
		err := responder.ServeRedis(ctx, responder.RedisConfig{Client: srv.Client(), Group: "tslm", Consumer: "redis-worker"}, echo, "orders")
		if err != nil && ctx.Err() == nil {
			t.Errorf("ServeRedis: %v", err)
		}
	})
	workers.Go(func() {
		err := responder.ServeWebSocket(ctx, responder.WebSocketConfig{URL: rs[1].internalURL}, echo, "orders")
		if err != nil && ctx.Err() == nil {
			t.Errorf("ServeWebSocket: %v", err)
		}
	})
	defer workers.Wait()
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		cl := dial(t, rs[i%2].publicURL)
		wg.Go(func() {
			for j := range perClient {
				cl.request(fmt.Sprintf("r%d", j), "orders", map[string]any{"client": i, "n": j}, 20000)
			}
			acks, replies := map[string]string{}, map[string]bool{}
			for len(replies) < perClient {
				f, err := cl.next(30 * time.Second)
				if err != nil {
					errs <- fmt.Errorf("client %d after %d replies: %w", i, len(replies), err)
					return
				}
				ref, _ := f["ref"].(string)
				switch f["type"] {
				case "ack":
					acks[ref], _ = f["id"].(string)
				case "reply":
					want := fmt.Sprintf(`{"client":%d,"n":%s}`, i, strings.TrimPrefix(ref, "r"))
					got, _ := json.Marshal(f["data"])
					switch {
					case acks[ref] == "" || acks[ref] != f["id"]:
						errs <- fmt.Errorf("client %d: reply %v before its ack or with another id (ack %q)", i, f, acks[ref])
						return
					case replies[ref]:
						errs <- fmt.Errorf("client %d: second reply for %s", i, ref)
						return
					case string(got) != want:
						errs <- fmt.Errorf("client %d: reply for %s carries %s, want %s", i, ref, got, want)
						return
					}
					replies[ref] = true
				default:
					errs <- fmt.Errorf("client %d: unexpected frame %v", i, f)
					return
				}
			}
			if f, err := cl.next(200 * time.Millisecond); err == nil {
				errs <- fmt.Errorf("client %d: frame after its last reply: %v", i, f)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// startEchoResponder runs the example as users would, with env, until the
// test ends.
func startEchoResponder(t testing.TB, env map[string]string, channels ...string) {
	t.Helper()
	cmd := exec.Command(echoResponder.Path(t), channels...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("echo-responder did not stop within 5s of SIGTERM")
		}
		if t.Failed() {
			t.Logf("echo-responder output:\n%s", logs)
		}
	})
}

func TestEchoResponderExample(t *testing.T) {
	t.Run("internal-websocket", func(t *testing.T) {
		r := startReplica(t, requestAllow)
		r.create(t, "orders", nil)
		startEchoResponder(t, map[string]string{"TSLM_INTERNAL_URL": r.internalURL, "TSLM_REDIS_URL": ""}, "orders")
		cl := dial(t, r.publicURL)
		id, _ := cl.requestAcked("r1", "orders", map[string]any{"echo": "me"}, 10000)
		rep := cl.expect(map[string]any{"type": "reply", "ref": "r1", "id": id})
		jsonEqual(t, "echo", rep["data"], `{"echo":"me"}`)
	})
	t.Run("redis", func(t *testing.T) {
		srv, rs := startRedis(t, redistest.Options{}, 1, requestAllow)
		rs[0].create(t, "orders", nil)
		startEchoResponder(t, map[string]string{"TSLM_REDIS_URL": srv.URL()}, "orders")
		cl := dial(t, rs[0].publicURL)
		id, _ := cl.requestAcked("r1", "orders", []any{1, "two"}, 10000)
		rep := cl.expect(map[string]any{"type": "reply", "ref": "r1", "id": id})
		jsonEqual(t, "echo", rep["data"], `[1,"two"]`)
	})
}

// TestSessionTokenNeverLogged: a session's whole life, debug logs
// included — requests, replies, a duplicate and a malformed reply dropped,
// a resume on another replica, forged tokens — and no log line holds the
// token or the part of it a careless truncation would keep.
func TestSessionTokenNeverLogged(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, logsA := startLoggedReplica(t, srv, requestAllow)
	b, logsB := startLoggedReplica(t, srv, requestAllow)
	a.create(t, "orders", nil)
	w := &redisWorker{t: t, c: srv.Client(), group: "tslm", consumer: "w1"}

	cl := dial(t, a.publicURL)
	id, token := cl.requestAcked("r1", "orders", "x", 10000)
	req := w.claim("orders", 1)[0]
	cl.conn.Close()
	w.reply("orders", req, echoEnvelope("orders", req))
	w.reply("orders", req, echoEnvelope("orders", req))
	w.reply("orders", req, `{"not":"an envelope"}`)

	clB := dial(t, b.publicURL)
	clB.send(map[string]any{"type": "session", "ref": "s", "session": token, "pending": []any{map[string]any{"channel": "orders", "id": id, "ref": "r1"}}})
	clB.expect(map[string]any{"type": "ack", "ref": "s"})
	clB.expect(map[string]any{"type": "reply", "ref": "r1", "id": id})
	forged := dial(t, b.publicURL)
	forged.send(map[string]any{"type": "session", "ref": "f", "session": token[:20] + "!"})
	forged.expect(map[string]any{"type": "error", "ref": "f", "code": "bad_request"})

	for name, logs := range map[string]*logBuffer{"A": logsA, "B": logsB} {
		text := logs.String()
		if text == "" {
			t.Fatalf("replica %s logged nothing at debug level: the check would prove nothing", name)
		}
		if strings.Contains(text, token[:16]) {
			t.Fatalf("replica %s logged the session token:\n%s", name, text)
		}
	}
}

// TestServingAppsLeaveNoConsumers: every app connection that serves is a
// consumer of the group in Redis, which keeps consumers for good unless
// they are deleted; apps that come and go — one killed while it held a
// request, others unserving it — must not pile them up.
func TestServingAppsLeaveNoConsumers(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 1, requestAllow)
	r := rs[0]
	r.create(t, "orders", nil)
	cl := dial(t, r.publicURL)
	id, _ := cl.requestAcked("r1", "orders", "held", 20000)
	for i := range 5 {
		app := dial(t, r.internalURL)
		app.serve("orders")
		if i == 0 {
			app.expect(map[string]any{"type": "request", "id": id})
			app.conn.UnderlyingConn().Close() // killed while holding it
			continue
		}
		// Each later app gets the request handed back by the one before.
		req := app.expect(map[string]any{"type": "request", "id": id, "deliveries": i + 1})
		if i == 4 {
			app.send(map[string]any{"type": "reply", "ref": "a", "channel": "orders", "id": id, "data": req["data"]})
			app.expect(map[string]any{"type": "ack", "ref": "a"})
		}
		app.send(map[string]any{"type": "unserve", "ref": "u", "channel": "orders"})
		app.expect(map[string]any{"type": "ack", "ref": "u"})
		app.conn.Close()
	}
	cl.expect(map[string]any{"type": "reply", "ref": "r1", "id": id})
	var left []string
	eventually(t, 5*time.Second, "consumers of apps gone to leave the group", func() bool {
		cs, err := srv.Client().XInfoConsumers(t.Context(), "tslm:req:{orders}", "tslm").Result()
		if err != nil {
			t.Fatal(err)
		}
		left = left[:0]
		for _, c := range cs {
			if c.Name != "released" {
				left = append(left, c.Name)
			}
		}
		return len(left) == 0
	})
}

// TestOversizedReplyFromRedis: an app writing to Redis is not held to the
// WebSocket's data limit; a reply over TSLM_MAX_DATA_BYTES reaches the
// client as too_large for that request, once, and the connection stays —
// it is not closed as a slow consumer at every resume.
func TestOversizedReplyFromRedis(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 1, withEnv(requestAllow, map[string]string{"TSLM_MAX_DATA_BYTES": "1000"}))
	r := rs[0]
	r.create(t, "orders", nil)
	w := &redisWorker{t: t, c: srv.Client(), group: "tslm", consumer: "w1"}
	cl := dial(t, r.publicURL)
	id, _ := cl.requestAcked("r1", "orders", "big please", 10000)
	req := w.claim("orders", 1)[0]
	w.reply("orders", req, fmt.Sprintf(`{"channel":"orders","id":%q,"data":%q}`, req.id, strings.Repeat("x", 1000)))
	cl.expect(map[string]any{"type": "error", "ref": "r1", "code": "too_large", "channel": "orders", "id": id})
	id2, _ := cl.requestAcked("r2", "orders", "small", 10000)
	req = w.claim("orders", 1)[0]
	w.reply("orders", req, echoEnvelope("orders", req))
	cl.expect(map[string]any{"type": "reply", "ref": "r2", "id": id2})
}
