package gateway

import (
	"context"
	"errors"
)

var errRedisNotBuilt = errors.New("TSLM_REDIS_URL: the Redis backlog is not built yet")

func (g *Gateway) openRedis(context.Context) error { return errRedisNotBuilt }
