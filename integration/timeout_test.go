package integration

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/internal/syncbuf"
)

// logBuffer collects a replica's logs for inspection.
type logBuffer struct{ syncbuf.Buffer }

// lines returns the log lines that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		match := l != ""
		for _, p := range parts {
			match = match && strings.Contains(l, p)
		}
		if match {
			out = append(out, l)
		}
	}
	return out
}

// startLoggedReplica is startReplica on srv with its logs, debug included,
// kept in the returned buffer.
func startLoggedReplica(t *testing.T, srv *redistest.Server, overrides map[string]string) (*replica, *logBuffer) {
	t.Helper()
	env := map[string]string{"TSLM_REDIS_URL": srv.URL()}
	for k, v := range overrides {
		env[k] = v
	}
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := startReplicaLogging(t, env, logger, func() {
		if t.Failed() {
			t.Logf("replica logs:\n%s", logs)
		}
	})
	return r, logs
}

// TestRedisHangsEveryEndpointTimesOut: while Redis takes commands and
// answers none, every endpoint that needs it answers unavailable (503 over
// HTTP) after TSLM_OPERATION_TIMEOUT, the same for all of them; the bound
// checked is a generous multiple of it, far below what each endpoint took
// before (2s to 40s). The outage is logged once, and so is its end.
func TestRedisHangsEveryEndpointTimesOut(t *testing.T) {
	const timeout = 250 * time.Millisecond
	const bound = 6 * timeout
	srv := redistest.Start(t, redistest.Options{})
	r, logs := startLoggedReplica(t, srv, map[string]string{"TSLM_OPERATION_TIMEOUT": timeout.String()})
	r.create(t, "hang", nil)
	r.publish(t, "hang", 1)

	thaw := srv.Hang()

	httpCall := func(method, path, body string) func() (string, error) {
		return func() (string, error) {
			req, err := http.NewRequest(method, r.apiURL+path, strings.NewReader(body))
			if err != nil {
				return "", err
			}
			resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
			if err != nil {
				return "", err
			}
			resp.Body.Close()
			return resp.Status[:3], nil
		}
	}
	wsCall := func(cmd map[string]any) func() (string, error) {
		return func() (string, error) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			f, err := wsCommandWithin(ctx, r.internalURL, cmd, time.Minute)
			return f.Type + " " + f.Code, err
		}
	}
	calls := []struct {
		name string
		do   func() (string, error) // the status or frame type and code
		want string
	}{
		{"HTTP create", httpCall(http.MethodPut, "/v1/channels/other", ""), "503"},
		{"HTTP info", httpCall(http.MethodGet, "/v1/channels/hang", ""), "503"},
		{"HTTP publish", httpCall(http.MethodPost, "/v1/channels/hang/messages", "2"), "503"},
		{"HTTP messages", httpCall(http.MethodGet, "/v1/channels/hang/messages?since=0-0", ""), "503"},
		{"HTTP messages since", httpCall(http.MethodGet, "/v1/channels/hang/messages?since=1-0", ""), "503"},
		{"readyz", httpCall(http.MethodGet, "/readyz", ""), "503"},
		{"WebSocket create", wsCall(map[string]any{"type": "create", "ref": "c", "channel": "other"}), "error unavailable"},
		{"WebSocket subscribe", wsCall(map[string]any{"type": "subscribe", "ref": "s", "channel": "hang", "since": "0-0"}), "error unavailable"},
		{"WebSocket publish", wsCall(map[string]any{"type": "publish", "ref": "p", "channel": "hang", "data": 2}), "error unavailable"},
	}
	// One at a time, so that each measures its own path and not a queue
	// behind the others.
	for _, c := range calls {
		start := time.Now()
		got, err := c.do()
		elapsed := time.Since(start)
		t.Logf("%s: %s after %v", c.name, got, elapsed.Round(time.Millisecond))
		if err != nil || got != c.want {
			t.Errorf("%s with Redis hanging: %q %v, want %q", c.name, got, err, c.want)
		}
		if elapsed > bound {
			t.Errorf("%s with Redis hanging answered after %v, want within %v (timeout %v)", c.name, elapsed, bound, timeout)
		}
	}

	thaw()
	eventually(t, 20*time.Second, "not ready after Redis came back", func() bool {
		return httpStatus(http.MethodGet, r.apiURL+"/readyz", "") == http.StatusOK
	})
	if got := logs.lines("level=WARN", "backlog unavailable"); len(got) != 1 {
		t.Errorf("outage logged %d times at WARN, want once: %q", len(got), got)
	}
	if got := logs.lines("level=INFO", "backlog available again"); len(got) != 1 {
		t.Errorf("recovery logged %d times at INFO, want once: %q", len(got), got)
	}
}

// TestRedisClientCancelIsNotAnOutage: a client that gives up on a publish
// while Redis hangs is not answered, and the backlog is not reported
// unavailable: nothing timed out, the client left.
func TestRedisClientCancelIsNotAnOutage(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	// go-redis cannot abandon a command already sent on a connection
	// that Redis does not answer, so a publish that reached Redis before
	// the server noticed the cancel returns at the operation timeout: it
	// must then count as the client's cancel too, not as an outage. 3s
	// keeps that path within the wait below, however loaded the machine.
	r, logs := startLoggedReplica(t, srv, map[string]string{"TSLM_OPERATION_TIMEOUT": "3s"})
	r.create(t, "c", nil)
	srv.Hang()

	// The client sends the whole request, then leaves: a half-close
	// (FIN) delivers every byte before the end, so the server surely reads
	// the request and then sees its client gone. Closing outright could
	// reset the connection and lose the request before the server read it.
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.apiURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/channels/c/messages HTTP/1.1\r\nHost: tslm\r\nContent-Length: 1\r\n\r\n1"); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the server did not notice the cancel", func() bool {
		return len(logs.lines("request canceled", "/v1/channels/c/messages")) > 0
	})
	for _, bad := range []string{"level=WARN", "level=ERROR", "unavailable"} {
		if got := logs.lines(bad); len(got) > 0 {
			t.Errorf("a client leaving logged %q: %q", bad, got)
		}
	}
}

// wsCommandWithin is wsCommand with a longer read deadline.
func wsCommandWithin(ctx context.Context, url string, cmd map[string]any, within time.Duration) (frame, error) {
	var f frame
	conn, err := dialConn(ctx, url)
	if err != nil {
		return f, err
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(within))
	if err := conn.WriteJSON(cmd); err != nil {
		return f, err
	}
	conn.SetReadDeadline(time.Now().Add(within))
	err = conn.ReadJSON(&f)
	return f, err
}
