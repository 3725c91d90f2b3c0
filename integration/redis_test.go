package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// The end-to-end tests of the durable backlog: several replicas on one
// private redis-server, publishers writing to Redis directly (the contract
// of docs/redis.md) or through any replica, and subscribers resuming on any
// replica across disconnects, trimming and Redis restarts.

// startRedis starts a private redis-server and n replicas on it.
func startRedis(t *testing.T, opts redistest.Options, n int, overrides map[string]string) (*redistest.Server, []*replica) {
	t.Helper()
	srv := redistest.Start(t, opts)
	env := map[string]string{"TSLM_REDIS_URL": srv.URL()}
	for k, v := range overrides {
		env[k] = v
	}
	replicas := make([]*replica, n)
	for i := range replicas {
		replicas[i] = startReplica(t, env)
	}
	return srv, replicas
}

func streamKey(channel string) string { return "tslm:ch:{" + channel + "}" }

// xadd appends data the way docs/redis.md tells publishers to, and returns
// the ID Redis gave it.
func xadd(ctx context.Context, c *redis.Client, channel string, data any) (string, error) {
	return c.Do(ctx, "XADD", streamKey(channel), "MAXLEN", "~", "10000", "*", "data", data).Text()
}

func mustXadd(t testing.TB, c *redis.Client, channel string, data any) string {
	t.Helper()
	id, err := xadd(t.Context(), c, channel, data)
	if err != nil {
		t.Fatalf("XADD %s: %v", channel, err)
	}
	return id
}

// streamIDs reads back every ID of channel's stream.
func streamIDs(t testing.TB, c *redis.Client, channel string) []string {
	t.Helper()
	xs, err := c.XRange(t.Context(), streamKey(channel), "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE %s: %v", channel, err)
	}
	ids := make([]string, len(xs))
	for i, x := range xs {
		ids[i] = x.ID
	}
	return ids
}

// needRestart skips t when srv cannot be stopped and started (the
// container backend).
func needRestart(t *testing.T, srv *redistest.Server) {
	t.Helper()
	if !srv.CanRestart() {
		t.Skip("this Redis backend cannot restart; install redis-server")
	}
}

// eventually polls cond every 20ms until it holds, failing after within.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// httpStatus returns the status of one request, 0 when it fails; it may
// be called from any goroutine.
func httpStatus(method, url, body string) int {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// wsPublish publishes over c (an internal-listener client) and returns the
// answer frame.
func (c *client) wsPublish(ref, channel string, data any) map[string]any {
	c.t.Helper()
	c.send(map[string]any{"type": "publish", "ref": ref, "channel": channel, "data": data})
	return c.expect(map[string]any{"ref": ref})
}

// TestRedisDirectXaddAndResumeOnAnotherReplica: a publisher's plain XADD
// reaches a subscriber on replica A with the XADD's ID; after a disconnect
// the subscriber resumes on replica B with exactly what it missed, in
// order, then live messages.
func TestRedisDirectXaddAndResumeOnAnotherReplica(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, nil)
	a, b := rs[0], rs[1]
	rdb := srv.Client()
	a.create(t, "prices", nil)

	sub := dial(t, a.publicURL)
	sub.subscribe("prices", nil)
	var seen []string
	for i := range 3 {
		id := mustXadd(t, rdb, "prices", fmt.Sprintf(`{"bid":%d}`, i))
		sub.expect(map[string]any{"type": "message", "channel": "prices", "id": id, "data": map[string]any{"bid": i}})
		seen = append(seen, id)
	}
	sub.conn.Close()

	var missed []string
	for i := range 5 {
		missed = append(missed, mustXadd(t, rdb, "prices", fmt.Sprintf(`{"missed":%d}`, i)))
	}
	again := dial(t, b.publicURL)
	ack := again.subscribe("prices", map[string]any{"since": seen[len(seen)-1]})
	if ack["resumed"] != true || ack["head"] != missed[len(missed)-1] {
		t.Fatalf("resume ack %v, want resumed:true head %s", ack, missed[len(missed)-1])
	}
	sameIDs(t, "missed messages", again.messages("prices", len(missed)), missed)
	live := []string{mustXadd(t, rdb, "prices", `"direct"`), a.publish(t, "prices", "through A")}
	sameIDs(t, "live after the resume", again.messages("prices", len(live)), live)
}

// TestRedisDirectFCall: a publisher's FCALL tslm_publish, which the
// replicas loaded at start, reaches subscribers on every replica with the
// ID it returned, interleaved in order with publishes through a replica.
// The poll is an hour away, so only the notification can bring it.
func TestRedisDirectFCall(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, map[string]string{"TSLM_POLL_INTERVAL": "1h"})
	rdb := srv.Client()
	rs[0].create(t, "quotes", nil)
	subs := []*client{dial(t, rs[0].publicURL), dial(t, rs[1].publicURL)}
	for _, sub := range subs {
		sub.subscribe("quotes", nil)
	}
	keys := []string{"tslm:meta:{quotes}", "tslm:ch:{quotes}", "tslm:req:{quotes}"}
	var want []string
	for i := range 3 {
		want = append(want, rs[i%2].publish(t, "quotes", "through a replica"))
		// Each round ends with it, and the last has nothing after it.
		id, err := rdb.FCall(t.Context(), "tslm_publish", keys, fmt.Sprintf(`{"bid":%d}`, i)).Text()
		if err != nil {
			t.Fatalf("FCALL tslm_publish: %v", err)
		}
		want = append(want, id)
	}
	for _, sub := range subs {
		sameIDs(t, "messages", sub.messages("quotes", len(want)), want)
	}
	err := rdb.FCall(t.Context(), "tslm_publish", []string{"tslm:meta:{none}", "tslm:ch:{none}", "tslm:req:{none}"}, "{}").Err()
	if err == nil || err.Error() != "ERR tslm: no such channel" {
		t.Errorf("FCALL on a missing channel: %v, want ERR tslm: no such channel", err)
	}
}

// TestRedisDataThatIsNotJSON: payloads a publisher XADDs directly that are
// not JSON, or not UTF-8, reach clients as JSON strings in valid text
// frames, both live and in a replay on another replica.
func TestRedisDataThatIsNotJSON(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, nil)
	rdb := srv.Client()
	rs[0].create(t, "raw", nil)
	live := dial(t, rs[0].publicURL)
	live.subscribe("raw", nil)

	cases := []struct {
		name string
		data any    // nil: an entry without a data field
		want string // the data field of the frame, as JSON
	}{
		{"JSON object", `{"a":[1,2]}`, `{"a":[1,2]}`},
		{"plain text", "hello world", `"hello world"`},
		{"invalid UTF-8", "\xff\xfeok", `"\ufffd\ufffdok"`},
		{"JSON string with invalid UTF-8", "\"caf\xe9\"", `"\"caf\ufffd\""`},
		{"empty", "", `""`},
		{"no data field", nil, `""`},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		var err error
		if c.data == nil {
			ids[i], err = rdb.Do(t.Context(), "XADD", streamKey("raw"), "*", "other", "x").Text()
		} else {
			ids[i], err = xadd(t.Context(), rdb, "raw", c.data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	replay := dial(t, rs[1].publicURL)
	replay.subscribe("raw", map[string]any{"since": "0-0"})
	for _, cl := range []struct {
		name string
		c    *client
	}{{"live on A", live}, {"replay on B", replay}} {
		for i, c := range cases {
			cl.c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			typ, b, err := cl.c.conn.ReadMessage()
			if err != nil {
				t.Fatalf("%s, %s: %v", cl.name, c.name, err)
			}
			if typ != websocket.TextMessage || !utf8.Valid(b) {
				t.Fatalf("%s, %s: frame type %d, valid UTF-8 %v: %q", cl.name, c.name, typ, utf8.Valid(b), b)
			}
			var f struct {
				Type, ID string
				Data     json.RawMessage
			}
			if err := json.Unmarshal(b, &f); err != nil {
				t.Fatalf("%s, %s: %q: %v", cl.name, c.name, b, err)
			}
			if f.Type != "message" || f.ID != ids[i] || string(f.Data) != c.want {
				t.Errorf("%s, %s: got %s, want id %s data %s", cl.name, c.name, b, ids[i], c.want)
			}
		}
	}
}

// TestRedisResumeAfterTrimming: a client resuming after an ID that was
// trimmed, by a publisher's XTRIM or by the channel's max_len, is told
// resumed:false and replays from the oldest message held.
func TestRedisResumeAfterTrimming(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, nil)
	a, b := rs[0], rs[1]
	rdb := srv.Client()

	cases := []struct {
		name        string
		maxLen      int // 0: the default, and a publisher's XTRIM MAXLEN 2
		since       int // index into the 6 IDs published; -1: 0-0
		wantResumed bool
		wantFrom    int
	}{
		{"XTRIM past since", 0, 1, false, 4},
		{"XTRIM just past since", 0, 3, false, 4},
		{"XTRIM, since 0-0", 0, -1, false, 4},
		{"XTRIM, since the oldest held", 0, 4, true, 5},
		{"max_len past since", 3, 0, false, 3},
		{"max_len just past since", 3, 2, false, 3},
		{"max_len, since 0-0", 3, -1, false, 3},
		{"max_len, since the oldest held", 3, 3, true, 4},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := fmt.Sprint("trim", i)
			if c.maxLen > 0 {
				a.create(t, ch, map[string]any{"max_len": c.maxLen})
			} else {
				a.create(t, ch, nil)
			}
			var ids []string
			for i := range 6 {
				ids = append(ids, a.publish(t, ch, i))
			}
			if c.maxLen == 0 {
				if err := rdb.XTrimMaxLen(t.Context(), streamKey(ch), 2).Err(); err != nil {
					t.Fatal(err)
				}
			}
			since := "0-0"
			if c.since >= 0 {
				since = ids[c.since]
			}
			cl := dial(t, b.publicURL)
			ack := cl.subscribe(ch, map[string]any{"since": since})
			if ack["resumed"] != c.wantResumed {
				t.Fatalf("since %s: ack %v, want resumed %v", since, ack, c.wantResumed)
			}
			sameIDs(t, "replay", cl.messages(ch, len(ids)-c.wantFrom), ids[c.wantFrom:])
			live := mustXadd(t, rdb, ch, `"live"`)
			sameIDs(t, "live", cl.messages(ch, 1), []string{live})
		})
	}
}

// TestRedisRestartWithAOF: Redis restarts with its data. A client resuming
// across the restart is resumed:true and misses nothing; subscribers that
// stayed connected get what is published after the restart, with no gap.
func TestRedisRestartWithAOF(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{AOF: true}, 2, nil)
	needRestart(t, srv)
	a, b := rs[0], rs[1]
	rdb := srv.Client()
	a.create(t, "aof", nil)

	stay := []*client{dial(t, a.publicURL), dial(t, b.publicURL)}
	for _, c := range stay {
		c.subscribe("aof", nil)
	}
	leaver := dial(t, a.publicURL)
	leaver.subscribe("aof", nil)
	before := []string{a.publish(t, "aof", 1), mustXadd(t, rdb, "aof", "2"), b.publish(t, "aof", 3)}
	for _, c := range stay {
		sameIDs(t, "before the restart", c.messages("aof", 3), before)
	}
	sameIDs(t, "leaver", leaver.messages("aof", 1), before[:1])
	leaver.conn.Close()

	srv.Restart()

	after := []string{mustXadd(t, rdb, "aof", "4"), a.publish(t, "aof", 5), b.publish(t, "aof", 6)}
	for i, c := range stay {
		sameIDs(t, fmt.Sprintf("stayed connected to replica %d", i), c.messages("aof", 3), after)
	}
	back := dial(t, b.publicURL)
	ack := back.subscribe("aof", map[string]any{"since": before[0]})
	if ack["resumed"] != true {
		t.Fatalf("resume across the restart: ack %v, want resumed:true", ack)
	}
	sameIDs(t, "resumed across the restart", back.messages("aof", 5), append(before[1:], after...))
}

// TestRedisRestartEmpty: Redis restarts without its data and the channel is
// made again. A client resuming from before is told resumed:false and gets
// what is held; a subscriber that stayed connected is sent a gap after its
// last ID, then the new messages.
func TestRedisRestartEmpty(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{}, 2, nil)
	needRestart(t, srv)
	a, b := rs[0], rs[1]
	a.create(t, "reset", nil)

	stay := []*client{dial(t, a.publicURL), dial(t, b.publicURL)}
	for _, c := range stay {
		c.subscribe("reset", nil)
	}
	before := []string{a.publish(t, "reset", 1), b.publish(t, "reset", 2), a.publish(t, "reset", 3)}
	for _, c := range stay {
		sameIDs(t, "before the restart", c.messages("reset", 3), before)
	}

	srv.Restart()
	if status, body := b.api(t, http.MethodGet, "/v1/channels/reset", nil); status != http.StatusNotFound {
		t.Fatalf("channel after an empty restart: %d %v, want 404", status, body)
	}
	b.create(t, "reset", nil)
	after := []string{b.publish(t, "reset", 4), a.publish(t, "reset", 5)}

	for i, c := range stay {
		c.expect(map[string]any{"type": "gap", "channel": "reset", "after": before[2]})
		sameIDs(t, fmt.Sprintf("stayed connected to replica %d", i), c.messages("reset", 2), after)
	}
	back := dial(t, a.publicURL)
	ack := back.subscribe("reset", map[string]any{"since": before[1]})
	if ack["resumed"] != false {
		t.Fatalf("resume after an empty restart: ack %v, want resumed:false", ack)
	}
	sameIDs(t, "replay after the reset", back.messages("reset", 2), after)
	live := b.publish(t, "reset", 6)
	for _, c := range append(stay, back) {
		sameIDs(t, "live after the reset", c.messages("reset", 1), []string{live})
	}
}

// TestRedisUnavailable: with Redis down, commands that need it answer
// unavailable (WebSocket) or 503 (HTTP, /readyz) while subscribers stay
// connected; once Redis is back, they receive what is XADDed right after
// it, with no ID missed.
func TestRedisUnavailable(t *testing.T) {
	srv, rs := startRedis(t, redistest.Options{AOF: true}, 2, nil)
	needRestart(t, srv)
	a, b := rs[0], rs[1]
	rdb := srv.Client()
	a.create(t, "down", nil)
	subs := []*client{dial(t, a.publicURL), dial(t, b.publicURL)}
	for _, c := range subs {
		c.subscribe("down", nil)
	}
	first := mustXadd(t, rdb, "down", "1")
	for _, c := range subs {
		sameIDs(t, "before the outage", c.messages("down", 1), []string{first})
	}
	pub := dial(t, a.internalURL)
	statsBefore := []int64{a.Hub().Stats().ReadErrors, b.Hub().Stats().ReadErrors}

	srv.Stop()

	// Each call fails only after the Redis client's retries (about 2s),
	// so they run side by side.
	var wg sync.WaitGroup
	for _, cmd := range []map[string]any{
		{"type": "publish", "ref": "p", "channel": "down", "data": 2},
		{"type": "subscribe", "ref": "s", "channel": "down"},
	} {
		wg.Go(func() {
			if f, err := wsCommand(t.Context(), a.internalURL, cmd); err != nil || f.Type != "error" || f.Code != "unavailable" || f.Ref != cmd["ref"] {
				t.Errorf("%s with Redis down: %+v %v, want error unavailable", cmd["type"], f, err)
			}
		})
	}
	for _, call := range []struct{ method, url, body string }{
		{http.MethodPost, a.apiURL + "/v1/channels/down/messages", "2"},
		{http.MethodPost, b.apiURL + "/v1/channels/down/messages", "2"},
		{http.MethodPut, b.apiURL + "/v1/channels/other", "{}"},
		{http.MethodGet, a.apiURL + "/readyz", ""},
		{http.MethodGet, b.apiURL + "/readyz", ""},
	} {
		wg.Go(func() {
			if s := httpStatus(call.method, call.url, call.body); s != http.StatusServiceUnavailable {
				t.Errorf("%s %s with Redis down: %d, want 503", call.method, call.url, s)
			}
		})
	}
	wg.Wait()
	for i, r := range rs {
		// The readers noticed the outage while the subscribers stayed.
		eventually(t, 10*time.Second, "no failed backlog read", func() bool {
			return r.Hub().Stats().ReadErrors > statsBefore[i]
		})
	}

	srv.Start()
	var after []string
	for i := range 5 {
		after = append(after, mustXadd(t, rdb, "down", fmt.Sprint(10+i)))
	}
	for i, r := range rs {
		eventually(t, 10*time.Second, fmt.Sprintf("replica %d not ready after Redis came back", i), func() bool {
			return httpStatus(http.MethodGet, r.apiURL+"/readyz", "") == http.StatusOK
		})
	}
	sameIDs(t, "stream after the outage", streamIDs(t, rdb, "down"), append([]string{first}, after...))
	for i, c := range subs {
		sameIDs(t, fmt.Sprintf("subscriber on replica %d after the outage", i), c.messages("down", len(after)), after)
	}
	if f := pub.wsPublish("p2", "down", 3); f["type"] != "ack" {
		t.Fatalf("publish after the outage: %v", f)
	}
	for _, c := range subs {
		c.expect(map[string]any{"type": "message", "data": 3})
	}
}

// TestRedisManyResumingClients publishes 10 000 messages, directly and
// through every replica over HTTP and WebSocket, while clients on random
// replicas drop their connections at random and resume with the last ID
// they saw: each must receive every ID in the stream once, in order.
func TestRedisManyResumingClients(t *testing.T) {
	const total, clients = 10_000, 10
	srv, rs := startRedis(t, redistest.Options{}, 3, nil)
	rdb := srv.Client()
	rs[0].create(t, "storm", map[string]any{"max_len": 100_000})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	// Each client draws from its own stream of the seed, so a seed
	// replays every client's choices of replica, drop point and way of
	// dropping (not the goroutines' interleaving).
	seed := testSeed(t)
	resumers := make([]*resumer, clients)
	var wg sync.WaitGroup
	for i := range resumers {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		resumers[i] = &resumer{
			channel: "storm",
			dial: func(ctx context.Context) (*websocket.Conn, string, error) {
				n := rng.IntN(len(rs))
				conn, err := dialConn(ctx, rs[n].publicURL)
				return conn, fmt.Sprint("replica ", n), err
			},
			drop: func() int { return 1 + rng.IntN(1500) },
			rng:  rng,
		}
		wg.Go(func() {
			if err := resumers[i].run(ctx, total); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		})
	}

	publishers := []func(i int) error{
		func(i int) error { _, err := xadd(ctx, rdb, "storm", fmt.Sprint(i)); return err },
		func(i int) error { _, err := httpPublish(ctx, rs[i%len(rs)].apiURL, "storm", i); return err },
	}
	for _, r := range rs[:2] {
		conn := dial(t, r.internalURL).conn
		publishers = append(publishers, func(i int) error { return wsPublishConn(conn, "storm", i) })
	}
	var pubs sync.WaitGroup
	for p, publish := range publishers {
		pubs.Go(func() {
			for i := p; i < total; i += len(publishers) {
				if err := publish(i); err != nil {
					t.Errorf("publisher %d, message %d: %v", p, i, err)
					cancel()
					return
				}
			}
		})
	}
	pubs.Wait()
	wg.Wait()
	if t.Failed() {
		return
	}
	want := streamIDs(t, rdb, "storm")
	if len(want) != total {
		t.Fatalf("the stream holds %d messages, want %d", len(want), total)
	}
	var sessions int
	for i, r := range resumers {
		sameIDs(t, fmt.Sprintf("client %d", i), r.ids, want)
		sessions += len(r.sessions)
	}
	if sessions < 2*clients {
		t.Errorf("%d sessions for %d clients: they hardly reconnected", sessions, clients)
	}
	t.Logf("%d clients received %d messages each over %d sessions", clients, total, sessions)
}

func dialConn(ctx context.Context, url string) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.DialContext(ctx, url, nil)
	return conn, err
}

// httpPublish is replica.publish for goroutines other than the test's.
func httpPublish(ctx context.Context, apiURL, channel string, data any) (string, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/v1/channels/"+channel+"/messages", strings.NewReader(string(b)))
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(body, &out) != nil || out.ID == "" {
		return "", fmt.Errorf("publish: %d %s", resp.StatusCode, body)
	}
	return out.ID, nil
}

// wsPublishConn publishes over an internal-listener connection and waits
// for the ack.
func wsPublishConn(conn *websocket.Conn, channel string, data any) error {
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := conn.WriteJSON(map[string]any{"type": "publish", "ref": "p", "channel": channel, "data": data}); err != nil {
		return err
	}
	var f frame
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := conn.ReadJSON(&f); err != nil {
		return err
	}
	if f.Type != "ack" || f.ID == "" {
		return fmt.Errorf("publish answered %+v", f)
	}
	return nil
}

// wsCommand sends one command on a new connection and returns the answer;
// it may be called from any goroutine.
func wsCommand(ctx context.Context, url string, cmd map[string]any) (frame, error) {
	var f frame
	conn, err := dialConn(ctx, url)
	if err != nil {
		return f, err
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := conn.WriteJSON(cmd); err != nil {
		return f, err
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	err = conn.ReadJSON(&f)
	return f, err
}

// frame is the part of a server frame the resuming clients look at.
type frame struct {
	Type    string
	Ref     string
	Channel string
	ID      string
	After   string
	Code    string
	Resumed *bool
}

// resumer is a subscriber that outlives its connections: after each one
// ends (dropped by itself, or closed by the server with a "reconnect" code)
// it dials again and resumes with since = the last ID it received, checking
// that IDs only grow. It returns errors rather than failing the test, so
// that it can run on its own goroutine.
type resumer struct {
	channel string
	// dial connects to some replica and names it.
	dial func(ctx context.Context) (*websocket.Conn, string, error)
	// drop returns how many messages the next connection reads before
	// the client drops it; nil or 0 means never.
	drop func() int
	// rng chooses how a dropped connection ends; needed with drop. Like
	// dial and drop, it is used only by run's goroutine.
	rng *rand.Rand

	// received counts messages; it may be read while run runs.
	received atomic.Int64

	// Owned by run until it returns.
	ids      []string
	last     backlog.ID
	sessions []session
	failed   int // dials that failed
}

// session is one connection of a resumer.
type session struct {
	backend  string
	since    string
	received int
	end      string // "dropped", "done" or "close <code>"
}

func (r *resumer) run(ctx context.Context, want int) error {
	for len(r.ids) < want {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%d of %d messages after %d sessions %v: %w", len(r.ids), want, len(r.sessions), r.sessions, err)
		}
		conn, backend, err := r.dial(ctx)
		if err != nil {
			if r.failed++; r.failed > 100 {
				return fmt.Errorf("dial: %w", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		s := session{backend: backend, since: r.last.String()}
		err = r.session(ctx, conn, &s, want)
		conn.Close()
		r.sessions = append(r.sessions, s)
		if err != nil {
			return fmt.Errorf("session %d on %s since %s, after %d messages: %w", len(r.sessions), backend, s.since, s.received, err)
		}
	}
	return nil
}

func (r *resumer) session(ctx context.Context, conn *websocket.Conn, s *session, want int) error {
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteJSON(map[string]any{"type": "subscribe", "ref": "r", "channel": r.channel, "since": s.since}); err != nil {
		return r.ended(s, err)
	}
	budget := 0
	if r.drop != nil {
		budget = r.drop()
	}
	acked := false
	for {
		deadline := time.Now().Add(10 * time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		conn.SetReadDeadline(deadline)
		var f frame
		if err := conn.ReadJSON(&f); err != nil {
			return r.ended(s, err)
		}
		switch {
		case !acked:
			if f.Type != "ack" || f.Ref != "r" || f.Resumed == nil || !*f.Resumed {
				return fmt.Errorf("subscribe answered %+v, want an ack with resumed:true", f)
			}
			acked = true
			continue
		case f.Type != "message" || f.Channel != r.channel:
			return fmt.Errorf("got %+v, want a message", f)
		}
		id, err := backlog.ParseID(f.ID)
		if err != nil {
			return err
		}
		if !r.last.Less(id) {
			return fmt.Errorf("message %s after %s: duplicate or out of order", id, r.last)
		}
		r.ids, r.last = append(r.ids, f.ID), id
		r.received.Add(1)
		s.received++
		switch {
		case len(r.ids) == want:
			s.end = "done"
			return nil
		case s.received == budget:
			s.end = "dropped"
			if r.rng.IntN(2) == 0 { // half the time, a clean close
				conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			}
			return nil
		}
	}
}

// ended accepts the server closes that mean "reconnect and resume".
func (r *resumer) ended(s *session, err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && (ce.Code == websocket.CloseGoingAway || ce.Code == 4000) {
		s.end = fmt.Sprint("close ", ce.Code)
		return nil
	}
	return err
}
