package backlog

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

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
	shards := slices.Collect(maps.Values(f.shards))
	f.mu.Unlock()
	for _, s := range shards {
		f.replaceShard(s)
	}
}

// watchWriter ties the follower's pub/sub connections to the writer's
// view of the primary: a connection of the writer's pool sits blocked in
// BLPOP on a key nobody writes, and go-redis closes it, with the writer's
// other connections to the old primary, when the writer learns of a
// switch; the follower then drops its pub/sub connections at once. So
// from the moment appends stop going to the old primary, its
// notifications are not listened to either, whichever sentinel each
// client heard first (watchSwitches may hear one sooner).
func (f *redisFollower) watchWriter(w *sentinelClient) {
	key := f.r.cfg.KeyPrefix + "switch-watch"
	f.wg.Go(func() {
		var backoff time.Duration
		for f.ctx.Err() == nil {
			err := f.blockUntilClosed(w, key)
			if f.ctx.Err() != nil {
				return
			}
			f.dropShards()
			if err != nil && !isConnError(err) {
				return // a reply: this Redis cannot block here (an ACL); the sentinels' announcements remain
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			select {
			case <-f.ctx.Done():
			case <-time.After(backoff/2 + rand.N(backoff/2+1)):
			}
		}
	})
}

// blockUntilClosed blocks a connection of w in BLPOP key 0 until go-redis
// closes it, the connection breaks, or the follower closes (CLIENT
// UNBLOCK from w's pool, which reaches the same primary).
func (f *redisFollower) blockUntilClosed(w *sentinelClient, key string) error {
	conn := w.Conn()
	defer conn.Close()
	id, err := conn.ClientID(f.ctx).Result()
	if err != nil {
		return err
	}
	done := make(chan struct{})
	stop := context.AfterFunc(f.ctx, func() {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			n, err := w.ClientUnblock(ctx, id).Result()
			cancel()
			if err == nil && n == 1 {
				return
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	defer stop()
	err = conn.BLPop(context.WithoutCancel(f.ctx), 0, key).Err()
	close(done)
	return err
}
