package gateway

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
)

// openRedis connects the Redis backlog. A Redis that is down at start is
// not fatal: the gateway starts not-ready, subscribers connect, and the
// follower retries with backoff, as it does when Redis goes away later.
func (g *Gateway) openRedis(ctx context.Context) error {
	client, err := backlog.NewRedisClient(g.cfg.RedisURL)
	if err != nil {
		return &ConfigError{Field: "RedisURL", Err: err}
	}
	metrics := &redisMetrics{}
	client.AddHook(metrics)
	cfg := g.redisConfig()
	cfg.Hooks = []redis.Hook{metrics}
	r := backlog.NewRedis(client, cfg)
	pingCtx, cancel := context.WithTimeout(ctx, g.cfg.OperationTimeout)
	defer cancel()
	reachable := true
	if err := r.Ping(pingCtx); err != nil {
		reachable = false
		g.logger.Error("Redis backlog unreachable at start; retrying in the background", "err", err)
	} else {
		g.logger.Info("using the Redis backlog", redisTarget(g.cfg.RedisURL, client)...)
	}
	g.log = closeBoth{Redis: r, client: client, metrics: metrics, stopLoad: g.loadFunctions(ctx, r, reachable)}
	return nil
}

// Backoff of loadFunctions while Redis cannot be reached.
const (
	loadFunctionsFirstWait = time.Second
	loadFunctionsMaxWait   = 30 * time.Second
)

// loadFunctions loads the tslm_publish function for direct publishers
// (docs/redis.md) until it is loaded once or Redis refuses it: at once
// when Redis answered the start-up ping, so that it is there when the
// gateway is ready, else in the background with backoff, so that a
// Redis down at start does not hold start-up. stop ends the background
// attempts and waits for them. A refusal is not fatal: direct publishers
// can still XADD, their entries delivered by the followers' poll.
func (g *Gateway) loadFunctions(ctx context.Context, r *backlog.Redis, reachable bool) (stop func()) {
	if reachable && g.tryLoadFunctions(ctx, r) {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait := loadFunctionsFirstWait
		for {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if g.tryLoadFunctions(ctx, r) {
				return
			}
			wait = min(2*wait, loadFunctionsMaxWait)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// tryLoadFunctions makes one attempt of loadFunctions and reports whether
// it is settled: loaded, refused, or given up because ctx is done.
func (g *Gateway) tryLoadFunctions(ctx context.Context, r *backlog.Redis) bool {
	opCtx, cancel := context.WithTimeout(ctx, g.cfg.OperationTimeout)
	defer cancel()
	err := r.LoadFunctions(opCtx)
	switch {
	case err == nil:
		g.logger.Info("loaded the Redis function tslm_publish for direct publishers", "library", backlog.FunctionLibrary)
		return true
	case ctx.Err() != nil:
		return true
	case errors.Is(err, backlog.ErrUnavailable):
		g.logger.Debug("Redis function tslm_publish not loaded yet; retrying", "err", err)
		return false
	default:
		g.logger.Warn("cannot load the Redis function tslm_publish (it needs Redis 7 and the FUNCTION command): "+
			"direct publishers must XADD, and their entries reach subscribers within the poll interval",
			"err", err, "poll_interval", g.cfg.PollInterval)
		return true
	}
}

// closeBoth closes the client the gateway opened along with the backlog,
// which does not own it. It holds the metrics of both clients.
type closeBoth struct {
	*backlog.Redis
	client  redis.UniversalClient
	metrics *redisMetrics
	// stopLoad ends loadFunctions' attempts.
	stopLoad func()
}

// collector exposes the Redis metrics: commands, both clients' pools
// ("client" for reads, "writer" for the scripts that change channels) and
// the follower's connections and counts.
func (c closeBoth) collector() prometheus.Collector {
	return &redisCollector{metrics: c.metrics, pools: func() map[string]*redis.PoolStats {
		return map[string]*redis.PoolStats{"client": c.client.PoolStats(), "writer": c.Redis.WriterPoolStats()}
	}, followers: c.Redis.FollowerStats}
}

func (c closeBoth) Close() error {
	c.stopLoad()
	c.Redis.Close()
	return c.client.Close()
}

// redisTarget describes where the backlog is, for the start-up log:
// the server's address, the primary's name and the sentinels asked for
// it (a Sentinel client's Options know neither), or a Cluster's seeds.
// No credentials.
func redisTarget(rawURL string, c redis.UniversalClient) []any {
	if u, err := url.Parse(rawURL); err == nil {
		if q := u.Query(); q.Has("master_name") {
			return []any{"sentinel_master", q.Get("master_name"), "sentinels", append([]string{u.Host}, q["addr"]...)}
		}
	}
	switch cl := c.(type) {
	case *redis.Client:
		return []any{"addr", cl.Options().Addr}
	case *redis.ClusterClient:
		return []any{"cluster_seeds", cl.Options().Addrs}
	}
	return []any{"addr", "unknown"}
}
