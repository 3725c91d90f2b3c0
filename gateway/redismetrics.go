package gateway

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tslm/tslm/backlog"

	"github.com/tslm/tslm/internal/histogram"
)

// redisMetrics is a go-redis hook on every client of the Redis backlog: it
// times each command and pipeline and counts the commands that failed,
// by command name. The names are the gateway's own commands, a bounded
// set, so a label per name stays small.
type redisMetrics struct {
	commands sync.Map // command name → *commandStats
}

type commandStats struct {
	seconds *histogram.Histogram
	errors  atomic.Int64
}

var _ redis.Hook = (*redisMetrics)(nil)

// redisSecondsBounds are the buckets of a command's round trip.
var redisSecondsBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Labels of pipelines: their round trip is timed whole, their commands'
// failures one by one.
const (
	pipelineLabel    = "pipeline"
	transactionLabel = "multi" // a pipeline in MULTI/EXEC
)

func (m *redisMetrics) of(name string) *commandStats {
	if s, ok := m.commands.Load(name); ok {
		return s.(*commandStats)
	}
	s, _ := m.commands.LoadOrStore(name, &commandStats{seconds: histogram.New(redisSecondsBounds)})
	return s.(*commandStats)
}

func (m *redisMetrics) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (m *redisMetrics) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		s := m.of(cmd.Name())
		if !blocking(cmd) {
			s.seconds.ObserveDuration(time.Since(start))
		}
		if failed(cmd, err) {
			s.errors.Add(1)
		}
		return err
	}
}

func (m *redisMetrics) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		label := pipelineLabel
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			label = transactionLabel
		}
		m.of(label).seconds.ObserveDuration(time.Since(start))
		for _, cmd := range cmds {
			// MULTI and EXEC wrap the others, which hold their failure.
			if name := cmd.Name(); name != "multi" && name != "exec" && failed(cmd, cmd.Err()) {
				m.of(name).errors.Add(1)
			}
		}
		return err
	}
}

// blocking reports whether cmd is a read that waits for news (XREAD or
// XREADGROUP with BLOCK): its time is how long nothing came, not a round
// trip, so it is not timed.
func blocking(cmd redis.Cmder) bool {
	if name := cmd.Name(); name != "xread" && name != "xreadgroup" {
		return false
	}
	for _, a := range cmd.Args() {
		if s, ok := a.(string); ok && strings.EqualFold(s, "block") {
			return true
		}
	}
	return false
}

// failed reports whether err, cmd's, is a failure: not an empty answer
// (redis.Nil), a caller that gave up (cancellation), nor an error reply
// that its sender expects and handles (expectedReply).
func failed(cmd redis.Cmder, err error) bool {
	switch {
	case err == nil, errors.Is(err, redis.Nil), errors.Is(err, context.Canceled):
		return false
	}
	if _, ok := errors.AsType[redis.Error](err); ok && expectedReply(cmd, err) {
		return false
	}
	return true
}

// expectedReply reports whether err, an error reply to cmd, is one its
// sender expects: the backlog loads a script again (NOSCRIPT), creates a
// consumer group (NOGROUP, BUSYGROUP), interrupts a blocked read on
// purpose (UNBLOCKED), and reads XINFO STREAM beside EXISTS, for channels
// whose stream does not exist yet; go-redis sets up connections with
// CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS, which older Redis
// versions refuse and go-redis does without.
func expectedReply(cmd redis.Cmder, err error) bool {
	for _, prefix := range []string{"NOSCRIPT", "NOGROUP", "BUSYGROUP", "UNBLOCKED"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	switch cmd.Name() {
	case "xinfo":
		return strings.Contains(err.Error(), "no such key")
	case "client":
		args := cmd.Args()
		if len(args) > 1 {
			sub, _ := args[1].(string)
			return strings.EqualFold(sub, "setinfo") || strings.EqualFold(sub, "maint_notifications")
		}
	}
	return false
}

// redisCollector exposes redisMetrics and the clients' connection pools
// at scrape time.
type redisCollector struct {
	metrics *redisMetrics
	// pools returns each client's pool counters by pool name; nil
	// stats are skipped.
	pools func() map[string]*redis.PoolStats
	// followers returns the backlog followers' figures.
	followers func() backlog.FollowerStats
}

var (
	descRedisSeconds = prometheus.NewDesc("tslm_redis_command_seconds",
		"Round trips of Redis commands, by command; pipelines whole as pipeline or multi. Blocking reads (XREAD, XREADGROUP with BLOCK) are not timed.", []string{"command"}, nil)
	descRedisErrors = prometheus.NewDesc("tslm_redis_errors_total",
		"Redis commands that failed (network, timeouts, error replies), by command; empty answers, cancellations and error replies the gateway handles (NOSCRIPT, NOGROUP, BUSYGROUP, UNBLOCKED) are not failures.", []string{"command"}, nil)
	descPoolHits     = prometheus.NewDesc("tslm_redis_pool_hits_total", "Times a Redis client found an idle connection in its pool.", []string{"pool"}, nil)
	descPoolMisses   = prometheus.NewDesc("tslm_redis_pool_misses_total", "Times a Redis client found no idle connection in its pool and dialed.", []string{"pool"}, nil)
	descPoolTimeouts = prometheus.NewDesc("tslm_redis_pool_timeouts_total", "Times a Redis client waited for a pool connection in vain.", []string{"pool"}, nil)
	descPoolConns    = prometheus.NewDesc("tslm_redis_pool_connections", "Connections a Redis client's pool holds, in use or idle.", []string{"pool"}, nil)
	descPoolIdle     = prometheus.NewDesc("tslm_redis_pool_idle_connections", "Idle connections in a Redis client's pool.", []string{"pool"}, nil)

	descPubSubConns = prometheus.NewDesc("tslm_redis_pubsub_connections",
		"Pub/sub connections the replica's follower holds: one per Redis node (per master in a Cluster), whatever the channels followed.", nil, nil)
	descShardSubs = prometheus.NewDesc("tslm_redis_subscriptions",
		"Shard subscriptions the replica's follower holds: one per channel followed.", nil, nil)
	descNotified = prometheus.NewDesc("tslm_redis_notified_total",
		"Entries the follower delivered from their notification alone, with no read of Redis.", nil, nil)
	descCaughtUp = prometheus.NewDesc("tslm_redis_catchup_reads_total",
		"Channels the follower read after its cursor because a notification may have been missed: a subscription confirmed, an entry whose predecessor was not the cursor (a plain XADD, a loss), or the poll.", nil, nil)
)

func (c *redisCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRedisSeconds, descRedisErrors, descPoolHits, descPoolMisses, descPoolTimeouts, descPoolConns, descPoolIdle,
		descPubSubConns, descShardSubs, descNotified, descCaughtUp} {
		ch <- d
	}
}

func (c *redisCollector) Collect(ch chan<- prometheus.Metric) {
	c.metrics.commands.Range(func(k, v any) bool {
		name, s := k.(string), v.(*commandStats)
		if snap := s.seconds.Snapshot(); snap.Count() > 0 {
			ch <- prometheus.MustNewConstHistogram(descRedisSeconds, snap.Count(), snap.Sum, snap.Cumulative(), name)
		}
		if name != pipelineLabel && name != transactionLabel { // failures count by command
			ch <- prometheus.MustNewConstMetric(descRedisErrors, prometheus.CounterValue, float64(s.errors.Load()), name)
		}
		return true
	})
	for pool, st := range c.pools() {
		if st == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descPoolHits, prometheus.CounterValue, float64(st.Hits), pool)
		ch <- prometheus.MustNewConstMetric(descPoolMisses, prometheus.CounterValue, float64(st.Misses), pool)
		ch <- prometheus.MustNewConstMetric(descPoolTimeouts, prometheus.CounterValue, float64(st.Timeouts), pool)
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(st.TotalConns), pool)
		ch <- prometheus.MustNewConstMetric(descPoolIdle, prometheus.GaugeValue, float64(st.IdleConns), pool)
	}
	if c.followers != nil {
		st := c.followers()
		ch <- prometheus.MustNewConstMetric(descPubSubConns, prometheus.GaugeValue, float64(st.PubSubConnections))
		ch <- prometheus.MustNewConstMetric(descShardSubs, prometheus.GaugeValue, float64(st.Subscriptions))
		ch <- prometheus.MustNewConstMetric(descNotified, prometheus.CounterValue, float64(st.Notified))
		ch <- prometheus.MustNewConstMetric(descCaughtUp, prometheus.CounterValue, float64(st.CaughtUp))
	}
}
