package gateway

import (
	"fmt"
	"strings"
	"time"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/httpapi"
	"github.com/tslm/tslm/internal/clientip"
	"github.com/tslm/tslm/ws"
)

// Config is a replica's configuration. Zero values mean the documented
// defaults, so Config{} runs a replica on the in-memory backlog. Most
// defaults belong to the package that applies the setting (ws, broker,
// backlog) and are written there once; WithDefaults reports them all.
// cmd/tslm fills Config from TSLM_* environment variables.
type Config struct {
	// PublicAddrs are the public listener's addresses; nil means ":8080".
	PublicAddrs []string
	// InternalAddrs are the internal listener's addresses; nil means
	// "127.0.0.1:8081". Keep it on a private interface.
	InternalAddrs []string
	// PublicAllow names the operations public clients may perform (see
	// ws.ParseOps); nil means ws's default, subscribe only.
	PublicAllow []string
	// RedisURL selects the Redis backlog; "" means the in-memory one.
	RedisURL string
	// RedisPrefix starts every Redis key; "" means backlog.RedisConfig's
	// default, "tslm:". See docs/redis.md.
	RedisPrefix string

	// Limits of both listeners: see ws.Config.
	MaxFrameBytes    int64
	MaxDataBytes     int
	SendQueue        int // ws.Config.SendQueueFrames
	SendQueueBytes   int
	MaxSubscriptions int
	MaxConnections   int
	// PublicRate is the commands per second a public connection may send;
	// 0 means 50, a negative value means unlimited. PublicBurst: 0 means 100.
	PublicRate  float64
	PublicBurst int
	// InternalRate is the same for internal connections; 0 or negative
	// means unlimited. InternalBurst: 0 means the rate rounded up.
	InternalRate  float64
	InternalBurst int
	// AllowedOrigins are browser origins allowed besides the server's own.
	AllowedOrigins []string

	PingInterval time.Duration
	PongTimeout  time.Duration
	WriteTimeout time.Duration
	// ShutdownGrace is how long Shutdown's caller should let clients
	// leave; 0 means 10s. cmd/tslm applies it.
	ShutdownGrace time.Duration
	// DrainDelay is how long cmd/tslm keeps serving after a stop signal
	// with /readyz answering 503, before it tells clients to leave: long
	// enough for a load balancer's health checks to stop sending new
	// clients here, so that those told to reconnect land elsewhere. 0 (the
	// default) drains at once, for a replica no balancer checks.
	DrainDelay time.Duration
	// HTTPIdleTimeout closes a keep-alive HTTP connection idle between
	// requests; 0 means 60s. HTTPReadTimeout bounds reading one request,
	// body included; 0 means 30s. Neither applies to a connection once
	// upgraded to WebSocket, which has its own ping timeout.
	HTTPIdleTimeout time.Duration
	HTTPReadTimeout time.Duration
	// Names are what refusals sent to clients call the settings they
	// point to (a full listener, a refused origin); zero values name the
	// Config fields. cmd/tslm names the TSLM_* variables.
	Names ws.SettingNames
	// OperationTimeout bounds every backlog call made for a client or a
	// readiness probe: past it the answer is unavailable (503). See
	// broker.Config.
	OperationTimeout time.Duration

	// Channel defaults and limits, the replay and the readers: see
	// broker.Config.
	DefaultMaxLen         int64
	DefaultRetention      time.Duration
	ChannelMaxLenLimit    int64         // broker.Config.MaxMaxLen
	ChannelRetentionLimit time.Duration // broker.Config.MaxRetention
	ReplayBuffer          int
	ReplayPage            int
	ReplayPageBytes       int
	ReplayBytes           int64
	ReplayWait            time.Duration
	ReplayOvertakes       int
	MaxLast               int
	ReadBatch             int
	TrimInterval          time.Duration
	// IdempotencyWindow is how long a publish's idempotency key is
	// remembered: see broker.Config. At most MaxIdempotencyWindow.
	IdempotencyWindow time.Duration
	// MaxIdempotencyKeys bounds the keys the in-memory backlog remembers:
	// see backlog.MemoryConfig.
	MaxIdempotencyKeys int

	// Requests and sessions: see broker.Config (MaxInflightRequests is
	// its MaxInflight, RequestReclaimAfter its ReclaimAfter). SessionTTL
	// must be at least MaxRequestTimeout, and RequestTimeout at most.
	RequestTimeout      time.Duration
	MaxRequestTimeout   time.Duration
	MaxInflightRequests int
	SessionTTL          time.Duration
	SessionReplies      int64
	ServeInflight       int
	RequestReclaimAfter time.Duration
	// MaxQueuedRequests bounds each channel's request queue, in either
	// backlog: see backlog.MemoryConfig and RedisConfig's MaxRequests.
	MaxQueuedRequests int

	// Security: see README.md "Security model" and docs/config.md.
	//
	// PublicAuth and InternalAuth are each listener's auth.Mode by name:
	// "off", "optional" or "required"; "" means off. AuthTimeout is how
	// long a connection to a listener that requires credentials has to
	// present them: see ws.Config.
	PublicAuth   string
	InternalAuth string
	AuthTimeout  time.Duration
	// Publishers are the publisher credentials (API key hashes, token
	// keys), from the TSLM_CONFIG file.
	Publishers auth.PublisherConfig
	// OIDCIssuer turns on subscriber SSO: access tokens from this OpenID
	// provider are verified against its discovery document and JWKS. The
	// other OIDC fields: see auth.OIDCConfig.
	OIDCIssuer      string
	OIDCAudience    string
	OIDCGrantsClaim string
	OIDCRefresh     time.Duration
	// Channels are the channel rules, from the TSLM_CONFIG file: first
	// match applies. See auth.ChannelRule.
	Channels []auth.ChannelRule
	// TLS certificate and key files of each listener; both or neither.
	// They are read again when they change, without a restart.
	PublicTLSCert, PublicTLSKey     string
	InternalTLSCert, InternalTLSKey string
	// TrustedProxies are the addresses (IPs or CIDR prefixes) whose
	// X-Forwarded-For and Forwarded headers name the client's address.
	TrustedProxies []string
	// MaxConnectionsPerIP bounds the public listener's connections from
	// one client address; 0 means 256. The internal listener has none.
	MaxConnectionsPerIP int
	// PublicAuthTokens and InternalAuthTokens are each listener's tokens,
	// the original TSLM's auth_tokens: when a listener has any, every
	// WebSocket upgrade, event stream and HTTP API request it serves
	// (health, readiness and metrics aside) must present one, or is
	// refused with 401. A token admits a client; it is no credential, so
	// the listener's auth mode applies after it as to a client without
	// any. See docs/protocol.md "Listener tokens".
	PublicAuthTokens   []auth.Secret
	InternalAuthTokens []auth.Secret
	// PublicLimits and InternalLimits are limits a config file sets per
	// listener, over the process-wide MaxFrameBytes, MaxDataBytes,
	// MaxConnections and SendQueue; zero fields mean those.
	PublicLimits, InternalLimits ListenerLimits
	// PublicOff opens no public listener: a config file whose public-role
	// listeners are all named otherwise (Listeners) sets it, so that only
	// the listeners it names open. Setting PublicAddrs in the environment
	// clears it.
	PublicOff bool
	// Listeners are further public-role listeners, from a config file
	// (see Listener).
	Listeners []Listener
	// HandshakeTimeout bounds reading a request's headers and completing a
	// WebSocket upgrade; 0 means 10s.
	HandshakeTimeout time.Duration
	// SendQueueBudget bounds the bytes queued for all clients of both
	// listeners together; 0 means 1 GiB. See ws.SendBudget.
	SendQueueBudget int64

	// MaxChannels bounds the channels of either backlog: see
	// backlog.MemoryConfig and backlog.RedisConfig.
	MaxChannels int
	// PollInterval is how often the Redis backlog's follower polls for
	// entries it was not notified of: see backlog.RedisConfig.
	PollInterval time.Duration
	// MaxReadLimit is the largest limit of an HTTP backlog read, and
	// MaxListLimit of an HTTP channel listing: see httpapi.Config.
	MaxReadLimit int
	MaxListLimit int

	// Demo serves the demo page at "/" and the browser client at
	// "/tslm.js" on the public listener (see clients/js). Off by default:
	// a production gateway serves no pages.
	Demo bool

	// Pprof serves net/http/pprof's profiles under /debug/pprof/ on the
	// internal listener, never on the public one. Off by default.
	Pprof bool
	// AccessLog logs a line when a WebSocket connection or an event
	// stream opens and one when it ends (see ws.Config.AccessLog); nil
	// means on. See docs/observability.md.
	AccessLog *bool
}

// Unlimited, as PublicRate or InternalRate, means no command rate limit.
const Unlimited = -1

// MaxIdempotencyWindow bounds IdempotencyWindow: a retry comes within
// minutes, and every key costs memory (Redis or the memory backlog) for
// the whole window.
const MaxIdempotencyWindow = 24 * time.Hour

const (
	defaultPublicAddr    = ":8080"
	defaultInternalAddr  = "127.0.0.1:8081"
	defaultPublicRate    = 50
	defaultPublicBurst   = 100
	defaultShutdownGrace = 10 * time.Second
	defaultHTTPIdle      = 60 * time.Second
	defaultHTTPRead      = 30 * time.Second
	// A NAT or a corporate proxy puts many users behind one address; a
	// single attacker's address rarely needs more than a handful.
	defaultMaxConnectionsPerIP = 256
	defaultHandshakeTimeout    = 10 * time.Second
	defaultSendQueueBudget     = 1 << 30
)

// WithDefaults returns c with every zero field set to its effective
// default, taken from the package that applies it.
func (c Config) WithDefaults() Config {
	wsDef := ws.Config{}.WithDefaults()
	hubDef := broker.Config{}.WithDefaults()
	memDef := backlog.MemoryConfig{}.WithDefaults()
	redisDef := backlog.RedisConfig{}.WithDefaults()
	apiDef := httpapi.Config{}.WithDefaults()

	if len(c.PublicAddrs) == 0 {
		c.PublicAddrs = []string{defaultPublicAddr}
	}
	if len(c.InternalAddrs) == 0 {
		c.InternalAddrs = []string{defaultInternalAddr}
	}
	if len(c.PublicAllow) == 0 {
		c.PublicAllow = strings.Split(wsDef.Allow.String(), ",")
	}
	orDefault(&c.MaxFrameBytes, wsDef.MaxFrameBytes)
	orDefault(&c.MaxDataBytes, wsDef.MaxDataBytes)
	orDefault(&c.SendQueue, wsDef.SendQueueFrames)
	orDefault(&c.SendQueueBytes, wsDef.SendQueueBytes)
	orDefault(&c.MaxSubscriptions, wsDef.MaxSubscriptions)
	orDefault(&c.MaxConnections, wsDef.MaxConnections)
	orDefault(&c.PublicRate, defaultPublicRate)
	orDefault(&c.PublicBurst, defaultPublicBurst)
	orDefault(&c.PingInterval, wsDef.PingInterval)
	orDefault(&c.PongTimeout, wsDef.PongTimeout)
	orDefault(&c.WriteTimeout, wsDef.WriteTimeout)
	orDefault(&c.ShutdownGrace, defaultShutdownGrace)
	orDefault(&c.OperationTimeout, hubDef.OperationTimeout)
	orDefault(&c.HTTPIdleTimeout, defaultHTTPIdle)
	orDefault(&c.HTTPReadTimeout, defaultHTTPRead)

	orDefault(&c.DefaultMaxLen, hubDef.DefaultMaxLen)
	orDefault(&c.DefaultRetention, hubDef.DefaultRetention)
	orDefault(&c.ChannelMaxLenLimit, hubDef.MaxMaxLen)
	orDefault(&c.ChannelRetentionLimit, hubDef.MaxRetention)
	orDefault(&c.ReplayBuffer, hubDef.ReplayBuffer)
	orDefault(&c.ReplayPage, hubDef.ReplayPage)
	orDefault(&c.ReplayPageBytes, hubDef.ReplayPageBytes)
	orDefault(&c.ReplayBytes, hubDef.ReplayBytes)
	orDefault(&c.ReplayWait, hubDef.ReplayWait)
	orDefault(&c.ReplayOvertakes, hubDef.ReplayOvertakes)
	orDefault(&c.MaxLast, hubDef.MaxLast)
	orDefault(&c.ReadBatch, hubDef.ReadBatch)
	orDefault(&c.TrimInterval, hubDef.TrimInterval)
	orDefault(&c.IdempotencyWindow, hubDef.IdempotencyWindow)
	orDefault(&c.RequestTimeout, hubDef.RequestTimeout)
	orDefault(&c.MaxRequestTimeout, hubDef.MaxRequestTimeout)
	orDefault(&c.MaxInflightRequests, hubDef.MaxInflight)
	orDefault(&c.SessionTTL, hubDef.SessionTTL)
	orDefault(&c.SessionReplies, hubDef.SessionReplies)
	orDefault(&c.ServeInflight, hubDef.ServeInflight)
	orDefault(&c.RequestReclaimAfter, hubDef.ReclaimAfter)
	orDefault(&c.MaxQueuedRequests, memDef.MaxRequests)

	oidcDef := auth.OIDCConfig{}.WithDefaults()
	orDefault(&c.AuthTimeout, wsDef.AuthTimeout)
	if c.PublicAuth == "" {
		c.PublicAuth = auth.ModeOff.String()
	}
	if c.InternalAuth == "" {
		c.InternalAuth = auth.ModeOff.String()
	}
	if c.OIDCGrantsClaim == "" {
		c.OIDCGrantsClaim = oidcDef.GrantsClaim
	}
	orDefault(&c.OIDCRefresh, oidcDef.Refresh)
	orDefault(&c.MaxConnectionsPerIP, defaultMaxConnectionsPerIP)
	orDefault(&c.HandshakeTimeout, defaultHandshakeTimeout)
	orDefault(&c.SendQueueBudget, defaultSendQueueBudget)

	orDefault(&c.MaxChannels, memDef.MaxChannels)
	orDefault(&c.MaxIdempotencyKeys, memDef.MaxIdempotencyKeys)
	if c.RedisPrefix == "" {
		c.RedisPrefix = redisDef.KeyPrefix
	}
	orDefault(&c.PollInterval, redisDef.PollInterval)
	orDefault(&c.MaxReadLimit, apiDef.MaxReadLimit)
	orDefault(&c.MaxListLimit, apiDef.MaxListLimit)
	if c.AccessLog == nil {
		on := true
		c.AccessLog = &on
	}
	c.withListenerDefaults()
	return c
}

// accessLogOn reports whether the access log is on: AccessLog, or its
// default.
func (c *Config) accessLogOn() bool { return c.AccessLog == nil || *c.AccessLog }

func orDefault[T int | int64 | float64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// ConfigError is an invalid setting. Field names the Config field, so that
// whoever filled it (cmd/tslm: an environment variable) can name its own
// source in the message.
type ConfigError struct {
	Field string
	// Related, if set, is the other field the value conflicts with.
	Related string
	Err     error
}

func (e *ConfigError) Error() string {
	if e.Related != "" {
		return e.Field + ": " + e.Err.Error() + " (see " + e.Related + ")"
	}
	return e.Field + ": " + e.Err.Error()
}
func (e *ConfigError) Unwrap() error { return e.Err }

func invalid(field, format string, args ...any) error {
	return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
}

func conflict(field, related, format string, args ...any) error {
	return &ConfigError{Field: field, Related: related, Err: fmt.Errorf(format, args...)}
}

// Validate checks c after WithDefaults. Its errors are *ConfigError.
func (c *Config) Validate() error {
	nonNegative := []struct {
		field string
		v     float64
	}{
		{"MaxFrameBytes", float64(c.MaxFrameBytes)},
		{"MaxDataBytes", float64(c.MaxDataBytes)},
		{"SendQueue", float64(c.SendQueue)},
		{"SendQueueBytes", float64(c.SendQueueBytes)},
		{"MaxSubscriptions", float64(c.MaxSubscriptions)},
		{"MaxConnections", float64(c.MaxConnections)},
		{"PublicBurst", float64(c.PublicBurst)},
		{"InternalBurst", float64(c.InternalBurst)},
		{"PingInterval", float64(c.PingInterval)},
		{"PongTimeout", float64(c.PongTimeout)},
		{"WriteTimeout", float64(c.WriteTimeout)},
		{"ShutdownGrace", float64(c.ShutdownGrace)},
		{"DrainDelay", float64(c.DrainDelay)},
		{"HTTPIdleTimeout", float64(c.HTTPIdleTimeout)},
		{"HTTPReadTimeout", float64(c.HTTPReadTimeout)},
		{"OperationTimeout", float64(c.OperationTimeout)},
		{"DefaultMaxLen", float64(c.DefaultMaxLen)},
		{"DefaultRetention", float64(c.DefaultRetention)},
		{"ChannelMaxLenLimit", float64(c.ChannelMaxLenLimit)},
		{"ChannelRetentionLimit", float64(c.ChannelRetentionLimit)},
		{"ReplayBuffer", float64(c.ReplayBuffer)},
		{"ReplayPage", float64(c.ReplayPage)},
		{"ReplayPageBytes", float64(c.ReplayPageBytes)},
		{"ReplayBytes", float64(c.ReplayBytes)},
		{"ReplayWait", float64(c.ReplayWait)},
		{"ReplayOvertakes", float64(c.ReplayOvertakes)},
		{"MaxLast", float64(c.MaxLast)},
		{"ReadBatch", float64(c.ReadBatch)},
		{"TrimInterval", float64(c.TrimInterval)},
		{"MaxChannels", float64(c.MaxChannels)},
		{"PollInterval", float64(c.PollInterval)},
		{"MaxReadLimit", float64(c.MaxReadLimit)},
		{"MaxListLimit", float64(c.MaxListLimit)},
		{"IdempotencyWindow", float64(c.IdempotencyWindow)},
		{"MaxIdempotencyKeys", float64(c.MaxIdempotencyKeys)},
		{"RequestTimeout", float64(c.RequestTimeout)},
		{"MaxRequestTimeout", float64(c.MaxRequestTimeout)},
		{"MaxInflightRequests", float64(c.MaxInflightRequests)},
		{"SessionTTL", float64(c.SessionTTL)},
		{"SessionReplies", float64(c.SessionReplies)},
		{"ServeInflight", float64(c.ServeInflight)},
		{"RequestReclaimAfter", float64(c.RequestReclaimAfter)},
		{"MaxQueuedRequests", float64(c.MaxQueuedRequests)},
		{"AuthTimeout", float64(c.AuthTimeout)},
		{"OIDCRefresh", float64(c.OIDCRefresh)},
		{"MaxConnectionsPerIP", float64(c.MaxConnectionsPerIP)},
		{"HandshakeTimeout", float64(c.HandshakeTimeout)},
		{"SendQueueBudget", float64(c.SendQueueBudget)},
	}
	for _, p := range nonNegative {
		if p.v < 0 {
			return invalid(p.field, "must be positive")
		}
	}
	switch {
	case int64(c.MaxDataBytes) >= c.MaxFrameBytes:
		return conflict("MaxDataBytes", "MaxFrameBytes", "(%d) must be less than the frame limit (%d): a publish frame wraps its data", c.MaxDataBytes, c.MaxFrameBytes)
	case c.DefaultMaxLen > c.ChannelMaxLenLimit:
		return conflict("DefaultMaxLen", "ChannelMaxLenLimit", "(%d) exceeds the channel max_len limit (%d)", c.DefaultMaxLen, c.ChannelMaxLenLimit)
	case c.DefaultRetention > c.ChannelRetentionLimit:
		return conflict("DefaultRetention", "ChannelRetentionLimit", "(%s) exceeds the channel retention limit (%s)", c.DefaultRetention, c.ChannelRetentionLimit)
	case c.IdempotencyWindow > MaxIdempotencyWindow:
		return invalid("IdempotencyWindow", "may be at most %s: every key is kept that long", MaxIdempotencyWindow)
	case c.PollInterval < 10*time.Millisecond:
		return invalid("PollInterval", "must be at least 10ms")
	case c.RequestTimeout > c.MaxRequestTimeout:
		return conflict("RequestTimeout", "MaxRequestTimeout", "(%s) exceeds the longest request timeout (%s)", c.RequestTimeout, c.MaxRequestTimeout)
	case c.SendQueueBudget < int64(c.SendQueueBytes):
		// Below one queue's bound the budget would close a client
		// before its own limit could, and possibly refuse frames that
		// limit lets through.
		return conflict("SendQueueBudget", "SendQueueBytes", "(%d) must be at least one connection's send queue (%d)", c.SendQueueBudget, c.SendQueueBytes)
	case c.SessionTTL < c.MaxRequestTimeout:
		// A client that reconnects just before a request's deadline must
		// still find its session's inbox, and the reply in it.
		return conflict("SessionTTL", "MaxRequestTimeout", "(%s) must be at least the longest request timeout (%s): a session outlives the requests it awaits", c.SessionTTL, c.MaxRequestTimeout)
	}
	for _, addrs := range []struct {
		field string
		list  []string
	}{{"PublicAddrs", c.PublicAddrs}, {"InternalAddrs", c.InternalAddrs}} {
		for _, a := range addrs.list {
			if strings.TrimSpace(a) == "" {
				return invalid(addrs.field, "has an empty address: give host:port, such as 127.0.0.1:8080 or :8080")
			}
		}
	}
	if err := backlog.CheckKeyPrefix(c.RedisPrefix); c.RedisPrefix != "" && err != nil {
		return &ConfigError{Field: "RedisPrefix", Err: err}
	}
	if _, err := ws.ParseOps(c.PublicAllow); err != nil {
		return &ConfigError{Field: "PublicAllow", Err: err}
	}
	if err := ws.ParseOrigins(c.AllowedOrigins); err != nil {
		return &ConfigError{Field: "AllowedOrigins", Err: err}
	}
	return c.validateSecurity()
}

// validateSecurity checks the security settings after WithDefaults.
func (c *Config) validateSecurity() error {
	for _, m := range []struct{ field, v string }{{"PublicAuth", c.PublicAuth}, {"InternalAuth", c.InternalAuth}} {
		if _, err := auth.ParseMode(m.v); err != nil {
			return &ConfigError{Field: m.field, Err: err}
		}
	}
	for _, pair := range []struct{ cert, key, certV, keyV string }{
		{"PublicTLSCert", "PublicTLSKey", c.PublicTLSCert, c.PublicTLSKey},
		{"InternalTLSCert", "InternalTLSKey", c.InternalTLSCert, c.InternalTLSKey},
	} {
		if (pair.certV == "") != (pair.keyV == "") {
			return conflict(pair.cert, pair.key, "a TLS certificate and its key go together: set both or neither")
		}
	}
	if _, err := auth.NewPolicy(c.Channels); err != nil {
		return &ConfigError{Field: "Channels", Err: err}
	}
	if _, err := clientip.Parse(c.TrustedProxies); err != nil {
		return &ConfigError{Field: "TrustedProxies", Err: err}
	}
	if err := c.validateRules(); err != nil {
		return err
	}
	if err := c.validateListeners(); err != nil {
		return err
	}
	return c.validateCredentials()
}
