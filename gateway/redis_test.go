package gateway

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

// hasFunctions reports whether Redis holds the tslm library.
func hasFunctions(t *testing.T, ctx context.Context, c *redis.Client) bool {
	t.Helper()
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: backlog.FunctionLibrary}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return len(libs) == 1 && libs[0].Name == backlog.FunctionLibrary
}

// TestRedisFunctionsLoadedAtStart: the gateway loads the tslm_publish
// function at start; when Redis is down then, once it comes back; when
// Redis refuses it, the gateway warns and serves anyway.
func TestRedisFunctionsLoadedAtStart(t *testing.T) {
	t.Run("Reachable", func(t *testing.T) {
		rs := redistest.Start(t, redistest.Options{})
		var logs syncBuffer
		startGateway(t, Config{RedisURL: rs.URL()}, slog.New(slog.NewJSONHandler(&logs, nil)))
		// Loaded before Start returns, so that it is there when the
		// gateway is ready.
		if !hasFunctions(t, t.Context(), rs.Client()) {
			t.Fatalf("no library %s after start; logs:\n%s", backlog.FunctionLibrary, logs.String())
		}
		if !strings.Contains(logs.String(), "loaded the Redis function tslm_publish") {
			t.Errorf("no log line for the load:\n%s", logs.String())
		}
	})

	t.Run("DownAtStart", func(t *testing.T) {
		rs := redistest.Start(t, redistest.Options{})
		rs.Stop()
		var logs syncBuffer
		startGateway(t, Config{RedisURL: rs.URL()}, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		// Back only after an attempt failed, so that it takes a retry.
		for !strings.Contains(logs.String(), "tslm_publish not loaded yet; retrying") {
			select {
			case <-ctx.Done():
				t.Fatalf("no failed attempt logged while Redis was down:\n%s", logs.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
		rs.Start()
		for !hasFunctions(t, ctx, rs.Client()) {
			select {
			case <-ctx.Done():
				t.Fatal("the library was not loaded once Redis came back")
			case <-time.After(50 * time.Millisecond):
			}
		}
	})

	t.Run("StaysDown", func(t *testing.T) {
		// Shutdown ends the attempts (startGateway's cleanup would hang
		// otherwise).
		rs := redistest.Start(t, redistest.Options{})
		rs.Stop()
		g := startGateway(t, Config{RedisURL: rs.URL()}, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		rs := redistest.Start(t, redistest.Options{})
		const password = "s3cret-pw"
		if err := rs.Client().Do(t.Context(), "ACL", "SETUSER", "nofn", "on", ">"+password, "~*", "&*", "+@all", "-function").Err(); err != nil {
			t.Fatal(err)
		}
		var logs syncBuffer
		g := startGateway(t, Config{RedisURL: "redis://nofn:" + password + "@" + rs.Addr() + "/0"}, slog.New(slog.NewJSONHandler(&logs, nil)))
		if hasFunctions(t, t.Context(), rs.Client()) {
			t.Fatal("loaded by a user without FUNCTION")
		}
		out := logs.String()
		if !strings.Contains(out, `"level":"WARN","msg":"cannot load the Redis function tslm_publish`) || !strings.Contains(out, "NOPERM") {
			t.Errorf("no warning naming the refusal:\n%s", out)
		}
		if strings.Contains(out, password) {
			t.Errorf("the logs quote the password:\n%s", out)
		}
		if err := g.Hub().Ready(t.Context()); err != nil {
			t.Errorf("not ready without the function: %v", err)
		}
	})
}
