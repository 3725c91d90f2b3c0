package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/envconfig"
)

// config returns the documented defaults with overrides applied, listening
// on loopback ports chosen by the kernel.
func config(t testing.TB, overrides map[string]string) gateway.Config {
	t.Helper()
	vars := map[string]string{
		"TSLM_PUBLIC_ADDRS":   "127.0.0.1:0",
		"TSLM_INTERNAL_ADDRS": "127.0.0.1:0",
	}
	for k, v := range overrides {
		vars[k] = v
	}
	st, err := envconfig.Load(vars)
	if err != nil {
		t.Fatal(err)
	}
	return st.Gateway
}

type replica struct {
	*gateway.Gateway
	publicURL, internalURL string // ws://…/v1/ws
	apiURL                 string // http://… of the internal listener
}

// startReplica starts a gateway in-process and shuts it down at cleanup.
func startReplica(t testing.TB, overrides map[string]string) *replica {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return startReplicaLogging(t, overrides, logger, nil)
}

// startReplicaLogging starts a gateway in-process that logs to logger, and
// shuts it down at cleanup, then runs afterShutdown if not nil.
func startReplicaLogging(t testing.TB, overrides map[string]string, logger *slog.Logger, afterShutdown func()) *replica {
	t.Helper()
	g, err := gateway.Start(t.Context(), config(t, overrides), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := contextWithTimeout(5 * time.Second)
		defer cancel()
		g.Shutdown(ctx)
		if afterShutdown != nil {
			afterShutdown()
		}
	})
	pub, in := g.PublicAddrs()[0].String(), g.InternalAddrs()[0].String()
	return &replica{Gateway: g, publicURL: "ws://" + pub + "/v1/ws", internalURL: "ws://" + in + "/v1/ws", apiURL: "http://" + in}
}

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// client is a WebSocket test client; frames are decoded into maps.
type client struct {
	t    testing.TB
	conn *websocket.Conn
}

func dial(t testing.TB, url string) *client {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"tslm.v1"}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn}
}

func (c *client) send(frame map[string]any) {
	c.t.Helper()
	b, err := json.Marshal(frame)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send %s: %v", b, err)
	}
}

// read returns the next frame, failing the test after 10s.
func (c *client) read() map[string]any {
	c.t.Helper()
	f, err := c.next(10 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *client) next(timeout time.Duration) (map[string]any, error) {
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := c.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("frame %s: %w", b, err)
	}
	return f, nil
}

// expect reads one frame and checks the given fields.
func (c *client) expect(want map[string]any) map[string]any {
	c.t.Helper()
	got := c.read()
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			c.t.Fatalf("frame %v: %s = %v, want %v", got, k, got[k], v)
		}
	}
	return got
}

// expectClose reads until the connection closes and checks its code.
func (c *client) expectClose(code int) {
	c.t.Helper()
	for {
		_, err := c.next(15 * time.Second)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("connection ended with %v, want close code %d", err, code)
		}
		if ce.Code != code {
			c.t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// subscribe sends a subscribe and returns its ack.
func (c *client) subscribe(channel string, extra map[string]any) map[string]any {
	c.t.Helper()
	f := map[string]any{"type": "subscribe", "ref": "sub-" + channel, "channel": channel}
	for k, v := range extra {
		f[k] = v
	}
	c.send(f)
	return c.expect(map[string]any{"type": "ack", "ref": "sub-" + channel, "channel": channel})
}

// messages reads n message frames of channel and returns their IDs.
func (c *client) messages(channel string, n int) []string {
	c.t.Helper()
	ids := make([]string, 0, n)
	for len(ids) < n {
		f := c.read()
		if f["type"] != "message" || f["channel"] != channel {
			c.t.Fatalf("after %d messages got %v, want a message of %s", len(ids), f, channel)
		}
		ids = append(ids, f["id"].(string))
	}
	return ids
}

// api calls the internal HTTP API and decodes the JSON answer.
func (r *replica) api(t testing.TB, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.apiURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		out = map[string]any{"raw": string(b)}
	}
	return resp.StatusCode, out
}

func (r *replica) create(t testing.TB, channel string, cfg map[string]any) {
	t.Helper()
	if status, body := r.api(t, http.MethodPut, "/v1/channels/"+channel, cfg); status != http.StatusCreated {
		t.Fatalf("create %s: %d %v", channel, status, body)
	}
}

func (r *replica) publish(t testing.TB, channel string, data any) string {
	t.Helper()
	status, body := r.api(t, http.MethodPost, "/v1/channels/"+channel+"/messages", data)
	if status != http.StatusCreated {
		t.Fatalf("publish to %s: %d %v", channel, status, body)
	}
	return body["id"].(string)
}

// testSeed returns the seed for t's randomness: $TSLM_TEST_SEED when set,
// to replay a failure, else a new one. It is logged at the start (shown
// with -v) and again when t fails, with the command that replays it.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TSLM_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TSLM_TEST_SEED=%q: want an unsigned integer: %v", s, err)
		}
		seed = v
	}
	t.Logf("random seed %d", seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("failed with random seed %d; replay with: TSLM_TEST_SEED=%d go test -race -run '^%s$' ./integration/", seed, seed, t.Name())
		}
	})
	return seed
}

// metric returns the value of the sample named series (name and labels,
// as /metrics prints them), 0 when it is absent.
func (r *replica) metric(t testing.TB, series string) float64 {
	t.Helper()
	resp, err := http.Get(r.apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for line := range strings.Lines(readAll(t, resp)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q: %v", series, v, err)
			}
			return f
		}
	}
	return 0
}

func sameIDs(t testing.TB, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d ids, want %d\ngot  %v\nwant %v", what, len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: id #%d = %s, want %s", what, i, got[i], want[i])
		}
	}
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
