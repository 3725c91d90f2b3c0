package backlog

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// watchSwitches drops the follower's pub/sub connections whenever a
// sentinel announces a new primary for the client's master: go-redis's
// failover client drops its pooled connections to the old primary then,
// but not its pub/sub ones, and a demoted primary left running (a
// partition healed) would go on notifying entries that its demotion
// throws away, which the follower would deliver. Every sentinel is
// listened to, so that the first one to announce the switch is heard:
// the writer hears one of them. The new subscriptions dial the primary
// the sentinels name, and their confirmations catch up from the cursors,
// proving continuity against the new primary.
func (f *redisFollower) watchSwitches(sc *sentinelClient) {
	addrs := sc.opt.SentinelAddrs
	for _, addr := range addrs {
		client := redis.NewSentinelClient(&redis.Options{
			Addr: addr, Username: sc.opt.SentinelUsername, Password: sc.opt.SentinelPassword,
			TLSConfig: sc.opt.TLSConfig, Dialer: sc.opt.Dialer, DialTimeout: sc.opt.DialTimeout,
			ContextTimeoutEnabled: true,
		})
		ps := client.Subscribe(f.ctx, "+switch-master")
		f.wg.Go(func() {
			defer client.Close()
			defer ps.Close()
			ch := ps.Channel()
			for {
				select {
				case <-f.ctx.Done():
					return
				case m, ok := <-ch:
					if !ok {
						return
					}
					if name, _, _ := strings.Cut(m.Payload, " "); name == sc.opt.MasterName {
						f.dropShards()
					}
				}
			}
		})
	}
}

// dropShards replaces every pub/sub connection.
func (f *redisFollower) dropShards() {
	f.mu.Lock()
	shards := make([]*shard, 0, len(f.shards))
	for _, s := range f.shards {
		shards = append(shards, s)
	}
	f.mu.Unlock()
	for _, s := range shards {
		f.replaceShard(s)
	}
}
