package backlog_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/internal/redistest"
)

type capturedRedisLogs struct {
	mu    sync.Mutex
	lines []string
}

func (c *capturedRedisLogs) Printf(_ context.Context, format string, v ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, fmt.Sprintf(format, v...))
}

// TestNewRedisLogsNothing: making the backlog's own no-retry client from
// the caller's must not trip go-redis into a warning at every start (it
// did: both clients shared one push notification processor).
func TestNewRedisLogsNothing(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	logs := &capturedRedisLogs{}
	redis.SetLogger(logs)
	t.Cleanup(func() { redis.SetLogger(&capturedRedisLogs{}) })
	client, err := backlog.NewRedisClient(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	r := backlog.NewRedis(client, backlog.RedisConfig{})
	defer r.Close()
	if _, err := r.Create(t.Context(), "logs", backlog.ChannelConfig{}); err != nil {
		t.Fatal(err)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.lines) > 0 {
		t.Fatalf("go-redis logged:\n%s", strings.Join(logs.lines, "\n"))
	}
}

// TestNewRedisClientURLs: the URL forms TSLM_REDIS_URL takes, and the
// ones it refuses with a reason rather than a confusing failure later.
func TestNewRedisClientURLs(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want string // "" for a client, else a part of the error
	}{
		{"redis://127.0.0.1:6379/0", ""},
		{"rediss://user:pw@127.0.0.1:6380/2?pool_size=7", ""},
		{"redis://127.0.0.1:26379?master_name=main&addr=127.0.0.1:26380&addr=127.0.0.1:26381", ""},
		{"redis://suser:spw@127.0.0.1:26379/3?master_name=main&username=app&password=apw", ""},
		// A cluster's seeds, in both forms users try.
		{"redis://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002", ""},
		{"redis://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002", ""},
		{"redis://user:secret@127.0.0.1:7000,127.0.0.1:7001/0", ""},
		{"rediss://user:secret@127.0.0.1:7000,127.0.0.1:7001/?pool_size=7", ""},
		{"rediss://:secret@127.0.0.1:7000/0?addr=127.0.0.1:7001", ""},
		{"redis://user:secret@127.0.0.1:7000,127.0.0.1:7001/2", "only database 0"},
		{"redis://user:secret@127.0.0.1:7000/1?addr=127.0.0.1:7001", "only database 0"},
		{"redis://user:secret@127.0.0.1:7000,127.0.0.1/0", `seed "127.0.0.1" is not host:port`},
		{"redis://user:secret@127.0.0.1:7000,,127.0.0.1:7002", "is not host:port"},
		{"redis://user:secret@127.0.0.1:7000?addr=nope", "addr"},
		{"redis://user:secret@127.0.0.1:7000,127.0.0.1:7001?pool_sise=3", "unexpected option"},
		{"redis://user:secret@127.0.0.1:7000,127.0.0.1:7001?db=3", "unexpected option"},
		{"redis://user:secret@127.0.0.1:7000,127.0.0.1:7001?dial_timeout=%zz", "invalid URL escape"},
		{"redis://user:secret@127.0.0.1:port?addr=127.0.0.1:7001", "invalid port"},
		{"http://user:secret@127.0.0.1:7000,127.0.0.1:7001", "scheme"},
		{"redis://127.0.0.1:26379,127.0.0.1:26380?master_name=main", "each other as an addr parameter"},
		{"redis://127.0.0.1:26379?master_name=", "master_name is empty"},
		{"redis://127.0.0.1:26379?master_name=main&addr=nope", "addr"},
		{"redis://127.0.0.1:6379?pool_sise=3", "unexpected option"},
		{"redis://user:secret@127.0.0.1:port/0", "invalid port"},
	} {
		c, err := backlog.NewRedisClient(tc.url)
		if tc.want == "" {
			if err != nil {
				t.Errorf("NewRedisClient(%q): %v", tc.url, err)
				continue
			}
			c.Close()
			continue
		}
		if err == nil {
			c.Close()
			t.Errorf("NewRedisClient(%q) succeeded, want an error about %q", tc.url, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewRedisClient(%q): %v, want an error about %q", tc.url, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("NewRedisClient(%q): the error %q shows the password", tc.url, err)
		}
	}
}

// TestNewRedisClientOptions: a Sentinel client gets the options a
// standalone one does, and the data nodes' credentials from the query
// (the userinfo is the sentinels').
func TestNewRedisClientOptions(t *testing.T) {
	for _, url := range []string{
		"redis://127.0.0.1:6379/0",
		"redis://suser:spw@127.0.0.1:26379/3?master_name=main&username=app&password=apw",
	} {
		c, err := backlog.NewRedisClient(url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cl, ok := c.(interface {
			Conn() *redis.Conn
			Options() *redis.Options
		})
		if !ok {
			t.Fatalf("NewRedisClient(%q) is a %T, want a *redis.Client or one embedding it (Read needs its dedicated connections)", url, c)
		}
		opt := cl.Options()
		if !opt.ContextTimeoutEnabled || opt.DialerRetries != 1 || opt.PoolSize < 1024 {
			t.Errorf("%q: ContextTimeoutEnabled %v, DialerRetries %d, PoolSize %d; want true, 1, ≥ 1024",
				url, opt.ContextTimeoutEnabled, opt.DialerRetries, opt.PoolSize)
		}
		if strings.Contains(url, "master_name") && (opt.Username != "app" || opt.Password != "apw" || opt.DB != 3) {
			t.Errorf("%q: Redis user %q, password %q, db %d; want app, apw, 3", url, opt.Username, opt.Password, opt.DB)
		}
	}
	for _, url := range []string{
		"redis://127.0.0.1:6379/0?pool_size=7&pipeline_pool_size=9",
		"redis://127.0.0.1:26379?master_name=main&pool_size=7&pipeline_pool_size=9",
	} {
		c, err := backlog.NewRedisClient(url)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if n := c.(interface{ Options() *redis.Options }).Options().PoolSize; n != 7 {
			t.Errorf("%q: PoolSize %d, want 7", url, n)
		}
	}
	c, err := backlog.NewRedisClient("redis://127.0.0.1:6379/0?pipeline_pool_size=9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := c.(*redis.Client).Options().PoolSize; n < 1024 {
		t.Errorf("pipeline_pool_size alone set PoolSize to %d, want the default", n)
	}
}

// TestNewRedisClientCluster: both seed forms make a Cluster client with
// every seed, the credentials, TLS for rediss://, and the options a
// standalone client gets.
func TestNewRedisClientCluster(t *testing.T) {
	seeds := []string{"127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"}
	for _, tc := range []struct {
		url      string
		tls      bool
		poolSize int // 0: the default
	}{
		{url: "redis://app:s3cret@127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002"},
		{url: "redis://app:s3cret@127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"},
		{url: "redis://app:s3cret@127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002/0?pool_size=7", poolSize: 7},
		{url: "rediss://app:s3cret@127.0.0.1:7000,127.0.0.1:7001/?addr=127.0.0.1:7002", tls: true},
	} {
		c, err := backlog.NewRedisClient(tc.url)
		if err != nil {
			t.Fatalf("NewRedisClient(%q): %v", tc.url, err)
		}
		defer c.Close()
		cc, ok := c.(*redis.ClusterClient)
		if !ok {
			t.Fatalf("NewRedisClient(%q) is a %T, want a *redis.ClusterClient", tc.url, c)
		}
		opt := cc.Options()
		if !slices.Equal(slices.Sorted(slices.Values(opt.Addrs)), seeds) {
			t.Errorf("%q: seeds %v, want %v", tc.url, opt.Addrs, seeds)
		}
		if opt.Username != "app" || opt.Password != "s3cret" {
			t.Errorf("%q: user %q, password %q; want app, s3cret", tc.url, opt.Username, opt.Password)
		}
		if (opt.TLSConfig != nil) != tc.tls {
			t.Errorf("%q: TLS %v, want %v", tc.url, opt.TLSConfig != nil, tc.tls)
		}
		if !opt.ContextTimeoutEnabled || opt.DialerRetries != 1 {
			t.Errorf("%q: ContextTimeoutEnabled %v, DialerRetries %d; want true, 1", tc.url, opt.ContextTimeoutEnabled, opt.DialerRetries)
		}
		if tc.poolSize != 0 && opt.PoolSize != tc.poolSize || tc.poolSize == 0 && opt.PoolSize < 1024 {
			t.Errorf("%q: PoolSize %d, want %d (0: ≥ 1024)", tc.url, opt.PoolSize, tc.poolSize)
		}
		if opt.ClusterStateReloadInterval > 5*time.Second {
			t.Errorf("%q: the slot map is reloaded every %v: a crashed master's slots would fail that long", tc.url, opt.ClusterStateReloadInterval)
		}
	}
}
