package config

import (
	"net/url"

	"github.com/tslm/tslm/backlog"
)

// redisTable is [redis]: the Redis backlog, which TSLM_REDIS_URL,
// TSLM_REDIS_PREFIX and TSLM_POLL_INTERVAL also set.
type redisTable struct {
	URL          string  `toml:"url"`
	Prefix       *string `toml:"prefix"`
	PollInterval *string `toml:"poll_interval"`
}

func (l *loader) redis(r redisTable) {
	if r.URL != "" {
		// Parsed as the gateway will parse it, so that a bad URL names its
		// line here rather than failing start-up later without one. The
		// client connects lazily: nothing is dialled.
		c, err := backlog.NewRedisClient(r.URL)
		if err != nil {
			l.fail("redis.url", "%v", err)
		} else {
			c.Close()
			l.cfg.RedisURL = r.URL
			l.set("RedisURL", "redis.url")
			if hasPassword(r.URL) {
				l.warnf("redis.url", "the URL holds a password, which whoever reads the file can use: prefer TSLM_REDIS_URL from a secret (it overrides this key)")
			}
		}
	}
	if r.Prefix != nil {
		if err := backlog.CheckKeyPrefix(*r.Prefix); err != nil {
			l.fail("redis.prefix", "%v (leave the key out for the default \"tslm:\")", err)
		} else {
			l.cfg.RedisPrefix = *r.Prefix
			l.set("RedisPrefix", "redis.prefix")
		}
	}
	if d, ok := l.duration("redis.poll_interval", r.PollInterval); ok {
		l.cfg.PollInterval = d
		l.set("PollInterval", "redis.poll_interval")
	}
}

// hasPassword reports whether a Redis URL carries a password: in its
// userinfo (the server's, or the sentinels'), or as the password parameter
// (the data nodes' behind sentinels).
func hasPassword(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	if _, ok := u.User.Password(); ok {
		return true
	}
	return u.Query().Get("password") != ""
}
