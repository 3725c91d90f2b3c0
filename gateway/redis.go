package gateway

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"
)

// openRedis connects the Redis backlog. A Redis that is down at start is
// not fatal: the gateway starts not-ready, subscribers connect, and the
// readers retry with backoff, as they do when Redis goes away later.
func (g *Gateway) openRedis(ctx context.Context) error {
	client, err := backlog.NewRedisClient(g.cfg.RedisURL)
	if err != nil {
		return &ConfigError{Field: "RedisURL", Err: err}
	}
	r := backlog.NewRedis(client, g.redisConfig())
	g.log = closeBoth{Redis: r, client: client}
	pingCtx, cancel := context.WithTimeout(ctx, g.cfg.OperationTimeout)
	defer cancel()
	if err := r.Ping(pingCtx); err != nil {
		g.logger.Error("Redis backlog unreachable at start; retrying in the background", "err", err)
	} else {
		g.logger.Info("using the Redis backlog", "addr", redisAddr(client))
	}
	return nil
}

// closeBoth closes the client the gateway opened along with the backlog,
// which does not own it.
type closeBoth struct {
	*backlog.Redis
	client redis.UniversalClient
}

func (c closeBoth) Close() error {
	c.Redis.Close()
	return c.client.Close()
}

func redisAddr(c redis.UniversalClient) string {
	if cl, ok := c.(*redis.Client); ok {
		return cl.Options().Addr
	}
	return "cluster"
}
