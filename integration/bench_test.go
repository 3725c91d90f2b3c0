package integration

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
	"github.com/tslm/tslm/internal/redistest"
)

// BenchmarkInternalPublish measures a trusted publisher on the internal
// listener: one WebSocket connection sending publish commands back to back
// while a second goroutine reads the acks, as a pipelining client does. One
// op is one publish, acknowledged. The in-memory backlog is the baseline
// for the Redis one, in the same run.
func BenchmarkInternalPublish(b *testing.B) {
	b.Run("backlog=memory", func(b *testing.B) {
		benchmarkInternalPublish(b, startReplica(b, nil))
	})
	b.Run("backlog=redis", func(b *testing.B) {
		srv := redistest.Start(b, redistest.Options{})
		benchmarkInternalPublish(b, startReplica(b, map[string]string{"TSLM_REDIS_URL": srv.URL()}))
	})
}

func benchmarkInternalPublish(b *testing.B, r *replica) {
	r.create(b, "bench", map[string]any{"max_len": 100000})
	pub := dial(b, r.internalURL)
	frame, err := json.Marshal(map[string]any{"type": "publish", "channel": "bench", "data": map[string]any{"bid": 1.08512, "ask": 1.08519}})
	if err != nil {
		b.Fatal(err)
	}
	acks := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() {
		for range b.N {
			f, err := pub.next(30 * time.Second)
			if err == nil && f["type"] != "ack" {
				err = &websocket.CloseError{Text: "not an ack"}
			}
			if err != nil {
				acks <- err
				return
			}
		}
		acks <- nil
	}()
	for range b.N {
		if err := pub.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-acks; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publishes/s")
}

// BenchmarkInternalPublishAuthenticated measures what credentials cost a
// trusted publisher on the internal HTTP API: one keep-alive connection
// publishing back to back, with the listener's auth off (the baseline, in
// the same run), then required with an API key, then with an Ed25519
// token. One op is one publish, answered.
func BenchmarkInternalPublishAuthenticated(b *testing.B) {
	apiKey := "bench-" + strings.Repeat("k", 40)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	token := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"sub": "bench", "exp": time.Now().Add(time.Hour).Unix(), "tslm": map[string][]string{"publish": {"bench"}, "create": {"bench"}},
	})
	token.Header["kid"] = "bench"
	signed, err := token.SignedString(priv)
	if err != nil {
		b.Fatal(err)
	}
	grants := []auth.Grant{{Ops: auth.Ops(auth.OpPublish, auth.OpCreate), Patterns: []auth.Pattern{auth.MustParsePattern("bench")}}}
	publishers := auth.PublisherConfig{
		APIKeys: []auth.APIKey{{SHA256: sha256.Sum256([]byte(apiKey)), Principal: auth.Principal{Subject: "bench", Grants: grants}}},
		JWTKeys: []auth.JWTKey{{ID: "bench", Ed25519: pub}},
	}
	for _, bc := range []struct{ name, mode, credential string }{
		{"auth=off", "off", ""},
		{"auth=required/api-key", "required", apiKey},
		{"auth=required/ed25519-token", "required", signed},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := config(b, nil)
			cfg.InternalAuth, cfg.Publishers = bc.mode, publishers
			g, err := gateway.Start(b.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			// Shut down before the next variant starts, so that none runs
			// beside an idle predecessor.
			defer func() {
				ctx, cancel := contextWithTimeout(5 * time.Second)
				defer cancel()
				g.Shutdown(ctx)
			}()
			base := "http://" + g.InternalAddrs()[0].String() + "/v1/channels/bench"
			do := func(method, url, body string) int {
				req, err := http.NewRequest(method, url, strings.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				if bc.credential != "" {
					req.Header.Set("Authorization", "Bearer "+bc.credential)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return resp.StatusCode
			}
			if s := do("PUT", base, `{"max_len":1000}`); s != http.StatusCreated && s != http.StatusOK {
				b.Fatalf("create: HTTP %d", s)
			}
			body := `{"bid":1.08512,"ask":1.08519}`
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if s := do("POST", base+"/messages", body); s != http.StatusOK && s != http.StatusCreated {
					b.Fatalf("publish: HTTP %d", s)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "publishes/s")
		})
	}
}
