package gateway

import (
	"context"
	"net/url"

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
	g.log = closeBoth{Redis: r, client: client, metrics: metrics}
	pingCtx, cancel := context.WithTimeout(ctx, g.cfg.OperationTimeout)
	defer cancel()
	if err := r.Ping(pingCtx); err != nil {
		g.logger.Error("Redis backlog unreachable at start; retrying in the background", "err", err)
	} else {
		g.logger.Info("using the Redis backlog", redisTarget(g.cfg.RedisURL, client)...)
	}
	return nil
}

// closeBoth closes the client the gateway opened along with the backlog,
// which does not own it. It holds the metrics of both clients.
type closeBoth struct {
	*backlog.Redis
	client  redis.UniversalClient
	metrics *redisMetrics
}

// collector exposes the Redis metrics: commands and both clients' pools
// ("client" for reads and readers, "writer" for the scripts that change
// channels).
func (c closeBoth) collector() prometheus.Collector {
	return &redisCollector{metrics: c.metrics, pools: func() map[string]*redis.PoolStats {
		return map[string]*redis.PoolStats{"client": c.client.PoolStats(), "writer": c.Redis.WriterPoolStats()}
	}}
}

func (c closeBoth) Close() error {
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
