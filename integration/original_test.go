package integration

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/redistest"
	"github.com/tslm/tslm/internal/syncbuf"
)

// Tests of the drop-in for the original TSLM (issue 20): its clients on
// /, with and without tokens, against a whole gateway on either backlog.

// dialLegacy connects to the original endpoint at url as an original
// client does: no subprotocol, or a token as the only one.
func dialLegacy(t testing.TB, url string, header http.Header, subprotocols ...string) *client {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(url, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s offering %q: %v (HTTP %d)", url, subprotocols, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn}
}

// refusedLegacy dials url expecting an HTTP refusal, and returns its
// status and body.
func refusedLegacy(t testing.TB, url string, subprotocols ...string) (int, string) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: subprotocols, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(url, nil)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s offering %q upgraded, want a refusal", url, subprotocols)
	}
	if resp == nil {
		t.Fatalf("dial %s: %v, want an HTTP refusal", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// expectLegacyError reads {"Error":"<code>: <message>"}.
func (c *client) expectLegacyError(code string) string {
	c.t.Helper()
	f := c.read()
	msg, _ := f["Error"].(string)
	if len(f) != 1 || !strings.HasPrefix(msg, code+": ") {
		c.t.Fatalf("got %v, want {\"Error\":\"%s: …\"}", f, code)
	}
	return msg
}

// rootURL is a listener's original endpoint.
func rootURL(addr string) string { return "ws://" + addr + "/" }

// TestOriginalClientsOnBothBacklogs replays the original protocol's
// examples (docs/protocol.md "The tslm.legacy subprotocol") against / as
// original clients speak it: publishers on the internal listener (the
// original's private one) without a subprotocol, subscribers on the public
// listener with its token as their subprotocol. On Redis the subscriber
// and the publisher are on different replicas: original clients get the
// replicas for free.
func TestOriginalClientsOnBothBacklogs(t *testing.T) {
	const token = "s3cret-token-0123456789"
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			var logs syncbuf.Buffer
			env := map[string]string{"TSLM_PUBLIC_AUTH_TOKENS": token}
			pubSide, subSide := (*replica)(nil), (*replica)(nil)
			logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			// Every line logged, the access log's and the shutdown's
			// included: none holds the token.
			checkLogs := func() {
				out := logs.String()
				if !strings.Contains(out, `"protocol":"tslm.legacy"`) {
					t.Errorf("no access log line of a legacy connection:\n%s", out)
				}
				if strings.Contains(out, "s3cret") {
					t.Errorf("the log holds the token:\n%s", out)
				}
			}
			switch backend {
			case "memory":
				r := startReplicaLogging(t, env, logger, checkLogs)
				pubSide, subSide = r, r
			case "redis":
				srv := redistest.Start(t, redistest.Options{})
				env["TSLM_REDIS_URL"] = srv.URL()
				pubSide, subSide = startReplicaLogging(t, env, logger, checkLogs), startReplicaLogging(t, env, logger, checkLogs)
			}
			pub := dialLegacy(t, rootURL(pubSide.InternalAddrs()[0].String()), nil)
			subURL := rootURL(subSide.PublicAddrs()[0].String())
			sub := dialLegacy(t, subURL, nil, token)
			if got := sub.conn.Subprotocol(); got != token {
				t.Errorf("the subscriber's handshake answered %q, want its token, as browsers require", got)
			}

			pub.send(map[string]any{"CreateChannel": "c"})
			pub.expect(map[string]any{"Success": "Channel c created"})
			pub.send(map[string]any{"CreateChannel": "c"})
			pub.expect(map[string]any{"Success": "Channel c already exists"})
			sub.send(map[string]any{"Subscribe": "c"})
			sub.expect(map[string]any{"Success": "Subscribed to c"})

			pub.send(map[string]any{"NotifyChannel": []any{"c", map[string]any{"Text": "hi"}}})
			pub.expect(map[string]any{"Success": "Message sent to c"})
			sub.expect(map[string]any{"ChannelMessage": []any{"c", map[string]any{"Text": "hi"}}})
			pub.send(map[string]any{"NotifyChannel": []any{"c", map[string]any{"Json": map[string]any{"a": 1}}}})
			pub.expect(map[string]any{"Success": "Message sent to c"})
			sub.expect(map[string]any{"ChannelMessage": []any{"c", map[string]any{"Json": map[string]any{"a": 1}}}})

			// The public listener allows subscribe only, as the
			// original's default_endpoint_permissions = ["Subscribe"].
			sub.send(map[string]any{"CreateChannel": "d"})
			sub.expectLegacyError("forbidden")
			sub.send(map[string]any{"NotifyChannel": []any{"c", map[string]any{"Text": "no"}}})
			sub.expectLegacyError("forbidden")
			sub.send(map[string]any{"Subscribe": "nowhere"})
			sub.expectLegacyError("not_found")
			pub.send(map[string]any{"NotifyChannel": []any{"nowhere", map[string]any{"Text": "x"}}})
			pub.expectLegacyError("not_found")
			pub.send(map[string]any{"Unsubscribe": "c"})
			pub.expectLegacyError("unknown_type")

			// Tokens: wrong or missing, refused before the upgrade; in
			// the header, admitted.
			for _, offer := range [][]string{nil, {"s3cret-token-012345678"}, {"tslm.legacy"}} {
				status, body := refusedLegacy(t, subURL, offer...)
				if status != http.StatusUnauthorized || strings.Contains(body, "s3cret") {
					t.Errorf("offering %q: HTTP %d %q, want 401 without the token", offer, status, body)
				}
			}
			if status, _ := refusedLegacy(t, "ws://"+subSide.PublicAddrs()[0].String()+"/v1/ws", "tslm.v1"); status != http.StatusUnauthorized {
				t.Errorf("/v1/ws without the token: HTTP %d, want 401: the token guards every path", status)
			}
			byHeader := dialLegacy(t, subURL, http.Header{"TSLM-Auth-Token": {token}})
			byHeader.send(map[string]any{"Subscribe": "c"})
			byHeader.expect(map[string]any{"Success": "Subscribed to c"})
			v1 := dialLegacy(t, "ws://"+subSide.PublicAddrs()[0].String()+"/v1/ws", nil, "tslm.v1", token)
			v1.subscribe("c", map[string]any{"last": 2})
			if got := v1.messages("c", 2); len(got) != 2 {
				t.Errorf("a v1 client with the token replayed %v", got)
			}

		})
	}
}
