package backlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The clients of the Redis backlog: the one NewRedisClient makes from
// TSLM_REDIS_URL (one server, a Sentinel set or a Cluster), and the
// retry-less writer NewRedis derives from it.

// NewRedisClient connects to a redis:// or rediss:// URL: one server's (see
// redis.ParseURL for its query options); a Sentinel set's when the query
// has master_name (redis.ParseFailoverURL: the host and each addr
// parameter are sentinels, the userinfo is the sentinels' credentials and
// the username and password parameters the data nodes'); or a Redis
// Cluster's when it names several seeds, either as addr parameters
// (redis.ParseClusterURL) or as a comma-separated host list,
// "h1:p1,h2:p2,h3:p3". A Cluster has only database 0: another one is
// refused. The Sentinel client is a *redis.Client that asks the sentinels
// for the primary on every dial and drops its connections to the old one
// when they announce a new one, so that commands fail while no primary
// answers and succeed against the promoted replica afterwards. The Cluster
// client is a *redis.ClusterClient.
//
// It turns ContextTimeoutEnabled on, so that ctx deadlines bound every
// command, and unless the URL sets pool_size it sizes the pool (per node
// for a Cluster) at 10 per CPU plus 1024 for blocking Claims: a serving
// app's pull holds a connection while it waits for a request.
// Connections are opened lazily, so the headroom costs nothing until it
// is used. Errors never quote the URL's password.
func NewRedisClient(rawURL string) (redis.UniversalClient, error) {
	if host := hostOf(rawURL); strings.Contains(host, ",") {
		if strings.Contains(rawURL, "master_name=") {
			return nil, errors.New("backlog: redis Sentinel URL: name one sentinel as the host and each other as an addr parameter, not a comma-separated list")
		}
		return newClusterClient(rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("backlog: redis URL: %w", urlError(err))
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		c, err := newFailoverClient(rawURL, q)
		if err != nil {
			return nil, err // not a nil *sentinelClient in the interface
		}
		return c, nil
	case q.Has("addr"):
		return newClusterClient(rawURL)
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("backlog: redis URL: %w", err)
	}
	opt.ContextTimeoutEnabled = true
	// go-redis redials 5 times per command attempt by default, so a
	// command to a Redis that is down took about 2s to fail: long enough
	// to trip a load balancer's readiness probe by timeout and to hold
	// publishers. Failing fast is enough, as the hub's readers retry with
	// their own backoff.
	opt.DialerRetries = 1
	if !q.Has("pool_size") {
		opt.PoolSize = defaultPoolSize()
	}
	return redis.NewClient(opt), nil
}

// urlError strips a *url.Error, whose message quotes the URL, password
// included, down to its cause.
func urlError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

// clusterStateReload is how often a Cluster client reloads the slot map
// besides after a MOVED. go-redis (v9.23) waits a minute by default, and a
// master that crashed sends no MOVED: its slots' commands fail to dial
// until the map shows the replica promoted in its place. A CLUSTER SLOTS
// every few seconds costs nothing next to a minute of failed publishes.
const clusterStateReload = 2 * time.Second

// newClusterClient is NewRedisClient for a Cluster's seeds, in either
// form, with the same options as a standalone client's.
func newClusterClient(rawURL string) (*redis.ClusterClient, error) {
	rawURL, err := clusterSeedsAsAddrs(rawURL)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("backlog: redis Cluster URL: %w", urlError(err))
	}
	if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		return nil, fmt.Errorf("backlog: redis Cluster URL: database %q: a Redis Cluster has only database 0", db)
	}
	u.Path = ""
	opt, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("backlog: redis Cluster URL: %w", urlError(err))
	}
	opt.ContextTimeoutEnabled = true
	opt.DialerRetries = 1 // as for one server: fail fast
	if !u.Query().Has("pool_size") {
		opt.PoolSize = defaultPoolSize()
	}
	opt.ClusterStateReloadInterval = clusterStateReload
	return redis.NewClusterClient(opt), nil
}

// clusterSeedsAsAddrs rewrites "scheme://[userinfo@]h1:p1,h2:p2[/db][?q]"
// into ParseClusterURL's form, "scheme://[userinfo@]h1:p1[/db]?q&addr=h2:p2";
// a URL without commas in its host is returned as it is.
func clusterSeedsAsAddrs(rawURL string) (string, error) {
	rawURL, _, _ = strings.Cut(rawURL, "#") // no meaning here
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return rawURL, nil
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	var userinfo string
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, authority = authority[:i+1], authority[i+1:]
	}
	seeds := strings.Split(authority, ",")
	if len(seeds) == 1 {
		return rawURL, nil
	}
	for _, s := range seeds {
		if h, p, err := net.SplitHostPort(s); err != nil || h == "" || p == "" {
			return "", fmt.Errorf("backlog: redis Cluster URL: seed %q is not host:port", s)
		}
	}
	path, query, _ := strings.Cut(tail, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", fmt.Errorf("backlog: redis Cluster URL: query: %w", err)
	}
	for _, s := range seeds[1:] {
		q.Add("addr", s)
	}
	return scheme + "://" + userinfo + seeds[0] + path + "?" + q.Encode(), nil
}

// newFailoverClient is NewRedisClient for a Sentinel URL, with the same
// options as a standalone client's.
func newFailoverClient(rawURL string, q url.Values) (*sentinelClient, error) {
	opt, err := redis.ParseFailoverURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("backlog: redis Sentinel URL: %w", err)
	}
	if opt.MasterName == "" {
		return nil, errors.New("backlog: redis Sentinel URL: master_name is empty")
	}
	opt.ContextTimeoutEnabled = true
	opt.DialerRetries = 1
	if !q.Has("pool_size") {
		opt.PoolSize = defaultPoolSize()
	}
	return newSentinelClient(opt), nil
}

func defaultPoolSize() int { return 10*runtime.GOMAXPROCS(0) + 1024 }

// hostOf returns the host part of a URL, between "//" (and userinfo) and
// the path or query, without parsing it: url.Parse refuses
// "host1:port1,host2:port2" as a bad port.
func hostOf(rawURL string) string {
	_, rest, _ := strings.Cut(rawURL, "://")
	end := strings.IndexAny(rest, "/?#")
	if end >= 0 {
		rest = rest[:end]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	return rest
}

// withoutRetries returns a client like c that never retries a command by
// itself, and whether it is a new one (to close) rather than c: clients of
// other types keep their own retry policy.
func withoutRetries(c redis.UniversalClient) (redis.UniversalClient, bool) {
	// Options() holds the push notification processor c made for itself;
	// a second client sharing it fails to register its handlers (and
	// go-redis logs a warning at every start), so each makes its own.
	switch c := c.(type) {
	case *sentinelClient:
		opt := c.opt
		opt.MaxRetries = -1
		opt.PushNotificationProcessor = nil
		return newSentinelClient(&opt), true
	case *redis.Client:
		opt := *c.Options()
		opt.MaxRetries = -1
		opt.PushNotificationProcessor = nil
		return redis.NewClient(&opt), true
	case *redis.ClusterClient:
		// MaxRetries is not enough here: a ClusterClient re-sends a
		// command after EOF or a read timeout in the same loop that
		// follows MOVED and ASK (MaxRedirects), whatever MaxRetries says.
		// Each node's client hides such failures from that loop
		// (notResent), so that redirections, which are replies saying
		// the command did not run, are still followed.
		opt := *c.Options()
		opt.MaxRetries = -1
		opt.PushNotificationProcessor = nil
		w := redis.NewClusterClient(&opt)
		w.OnNewNode(func(node *redis.Client) { node.AddHook(notResent{}) })
		return w, true
	}
	return c, false
}

// notResent is the hook of each node client of the Cluster writer: a
// failure after which the command may have run becomes a *mayHaveRun,
// which the ClusterClient does not retry. The others pass: replies
// (MOVED, ASK, TRYAGAIN, CLUSTERDOWN... say whether it ran), context
// errors (never retried), and failures before the command left (a dial,
// an exhausted or closed pool), which are safe to retry elsewhere.
type notResent struct{}

func (notResent) DialHook(next redis.DialHook) redis.DialHook { return next }

func (notResent) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := hideSent(next(ctx, cmd))
		if err != nil {
			cmd.SetErr(err)
		}
		return err
	}
}

// ProcessPipelineHook covers the ASK path, which sends ASKING and the
// command in a pipeline on the target node.
func (notResent) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := hideSent(next(ctx, cmds))
		for _, cmd := range cmds {
			if e := cmd.Err(); e != nil {
				cmd.SetErr(hideSent(e))
			}
		}
		return err
	}
}

// mayHaveRun is a failure after the command was sent: it may have run.
// It has no Unwrap on purpose: go-redis decides to re-send by looking
// through wrapping for io.EOF and timeouts. wrap unwraps it.
type mayHaveRun struct{ cause error }

func (e *mayHaveRun) Error() string {
	return "the connection failed after the command was sent, so it may have run: " + e.cause.Error()
}

func hideSent(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[redis.Error](err); ok {
		return err
	}
	if _, ok := errors.AsType[*mayHaveRun](err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) || errors.Is(err, redis.ErrClosed) {
		return err
	}
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "dial" {
		return err
	}
	return &mayHaveRun{cause: err}
}

// sentinelClient is the client NewRedisClient makes for a Sentinel set: a
// *redis.Client (Read dedicates its connections) that keeps the options it
// was made with, for withoutRetries. A copy of its Options() would dial
// the primary the sentinels name but keep its connections to it once
// demoted: only a client NewFailoverClient made drops them when the
// sentinels announce the switch.
type sentinelClient struct {
	*redis.Client
	opt redis.FailoverOptions
}

func newSentinelClient(opt *redis.FailoverOptions) *sentinelClient {
	kept := *opt // NewFailoverClient keeps and changes opt
	return &sentinelClient{Client: redis.NewFailoverClient(opt), opt: kept}
}
