package ws

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/internal/clientip"
	"github.com/tslm/tslm/internal/histogram"
)

// Ops is a set of client operations a listener allows: auth's, so that
// listeners, grants and channel rules speak of the same operations.
type Ops = auth.OpSet

// The operations as sets of one, each covering commands of both
// protocols (docs/protocol.md "Permissions"). They are auth.Ops of each
// operation, written as constants (TestOpsAreAuths holds them to it).
const (
	OpSubscribe Ops = 1 << auth.OpSubscribe // subscribe (unsubscribe needs nothing)
	OpPublish   Ops = 1 << auth.OpPublish
	OpCreate    Ops = 1 << auth.OpCreate
	OpRequest   Ops = 1 << auth.OpRequest // request, and session to resume one
	OpServe     Ops = 1 << auth.OpServe   // serve and reply: answering requests
	OpAll           = auth.AllOps
)

// ParseOps parses names such as ["subscribe", "publish"], as
// TSLM_PUBLIC_ALLOW lists them.
func ParseOps(names []string) (Ops, error) { return auth.ParseOps(names) }

// Config tunes a Server. Zero values mean the documented defaults.
type Config struct {
	// Name labels the listener in logs, such as "public".
	Name string
	// Allow is the set of operations clients may perform; 0 means
	// subscribe only. It is a ceiling no credentials raise.
	Allow Ops
	// Public marks the public listener, on which a channel rule's public
	// operations, when it has some, replace Allow for its channels.
	Public bool
	// MaxFrameBytes is the largest frame read; a larger one closes the
	// connection with 1009. 0 means 131072.
	MaxFrameBytes int64
	// MaxDataBytes is the largest publish, request or reply payload; a
	// larger one is refused with too_large. 0 means 65536.
	MaxDataBytes int
	// SendQueueFrames and SendQueueBytes bound what is queued for a client
	// and not yet written to its socket (the batch being written
	// included); a live message that does not fit closes the connection as
	// a slow consumer. 0 means 1024 frames and 4 MiB.
	SendQueueFrames int
	SendQueueBytes  int
	// MaxSubscriptions bounds a connection's subscriptions, and
	// separately the channels it serves; 0 means 100.
	MaxSubscriptions int
	// MaxConnections bounds this listener's connections, open or being
	// upgraded; one more is refused before the upgrade with HTTP 503 and
	// Retry-After. 0 means 10 000.
	MaxConnections int
	// CommandRate is the sustained commands per second a connection may
	// send, with bursts of CommandBurst (0: the rate rounded up); a rate of
	// 0 means unlimited. A connection
	// that keeps sending past its limit is closed with 1008.
	CommandRate  float64
	CommandBurst int
	// PingInterval is how often the server pings; a client silent for
	// PingInterval+PongTimeout is dropped. 0 means 25s and 10s.
	PingInterval time.Duration
	PongTimeout  time.Duration
	// WriteTimeout bounds one write to the client, and how long a reply or
	// replay waits for room in a full send queue. 0 means 10s.
	WriteTimeout time.Duration
	// AllowedOrigins are the browser origins (scheme://host[:port], the
	// scheme http or https) allowed to connect besides the server's own,
	// or "*" for any. Requests without an Origin header (non-browser
	// clients) are always allowed. Check them with ParseOrigins first: New
	// logs and skips entries that are not origins, as they could match no
	// browser.
	AllowedOrigins []string
	// AuthMode is how the listener treats credentials; Authenticator
	// (required unless AuthMode is auth.ModeOff) checks them, and Policy
	// (nil: no channel rules) decides each command. See docs/protocol.md
	// "Authentication".
	AuthMode      auth.Mode
	Authenticator Authenticator
	Policy        *auth.Policy
	// Tokens, when not nil, are the listener's tokens (the original TSLM's
	// auth_tokens): every upgrade and event stream must present one, or is
	// refused with HTTP 401 before anything else is checked but its
	// subprotocols. A token admits a connection; it is no principal, so
	// AuthMode and the Policy apply to the connection as to one without
	// credentials. See docs/protocol.md "Listener tokens".
	Tokens *auth.ListenerTokens
	// AuthTimeout is how long a connection to a listener whose AuthMode is
	// auth.ModeRequired has to authenticate before it is closed with 4500;
	// 0 means 10s.
	AuthTimeout time.Duration
	// MaxConnectionsPerIP bounds connections from one client address
	// (see ClientIP); one more is refused before the upgrade with HTTP 429.
	// 0 means unlimited.
	MaxConnectionsPerIP int
	// ClientIP tells a request's client address, trusted proxies
	// considered (see internal/clientip); nil means the request's
	// RemoteAddr. MaxConnectionsPerIP counts by it, and connection logs
	// name it as "client".
	ClientIP func(*http.Request) netip.Addr
	// HandshakeTimeout bounds writing the upgrade's answer; 0 means 10s.
	// (The HTTP server bounds reading the request.)
	HandshakeTimeout time.Duration
	// SendBudget, shared by the servers of a process, bounds the bytes
	// queued for all their clients together: a frame it has no room for
	// is treated like one that does not fit the send queue, but closes
	// with 4001. nil means no bound beyond each connection's
	// SendQueueBytes.
	SendBudget *SendBudget
	// Names are what operators call the settings a refusal points to, so
	// that whoever reads one knows what to change.
	Names SettingNames
	// AccessLog logs one line when a connection or an event stream opens
	// ("connection opened") and one when it ends ("connection closed"),
	// at Info: the client's address, the subject of its credentials and,
	// at the end, its duration, close code, reason, who closed it and its
	// frame counts; never a credential, a payload or the URL. It replaces
	// the line logged when the server closes a connection. Off by default.
	AccessLog bool
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
}

// SettingNames name settings in the answers refused clients get, such as
// "TSLM_ALLOWED_ORIGINS". Empty ones mean the Config field's name.
type SettingNames struct {
	MaxConnections      string
	AllowedOrigins      string
	MaxConnectionsPerIP string
}

func (c *Config) setDefaults() {
	if c.Allow == 0 {
		c.Allow = OpSubscribe
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = 128 << 10
	}
	if c.MaxDataBytes <= 0 {
		c.MaxDataBytes = 64 << 10
	}
	if c.SendQueueFrames <= 0 {
		c.SendQueueFrames = 1024
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = 4 << 20
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 100
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 10_000
	}
	if c.CommandRate > 0 && c.CommandBurst <= 0 {
		c.CommandBurst = int(math.Ceil(c.CommandRate))
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = c.Logger.With("listener", c.Name)
	if c.Names.MaxConnections == "" {
		c.Names.MaxConnections = "MaxConnections"
	}
	if c.Names.AllowedOrigins == "" {
		c.Names.AllowedOrigins = "AllowedOrigins"
	}
	if c.Names.MaxConnectionsPerIP == "" {
		c.Names.MaxConnectionsPerIP = "MaxConnectionsPerIP"
	}
	if c.ClientIP == nil {
		c.ClientIP = clientip.RemoteAddr
	}
}

// Server serves WebSocket clients of one listener at GET /v1/ws, the
// original TSLM's clients at GET / (ServeLegacy), and Server-Sent Events
// streams at GET /v1/sse (ServeSSE). It is safe
// for concurrent use.
type Server struct {
	cfg      Config
	hub      *broker.Hub
	upgrader websocket.Upgrader
	origins  origins

	mu       sync.Mutex
	conns    map[*conn]struct{}
	streams  map[*stream]struct{} // SSE (sse.go)
	slots    int                  // connections open or being upgraded, at most MaxConnections
	perIP    map[netip.Addr]int   // slots by client address, when MaxConnectionsPerIP is set
	draining bool
	drained  chan struct{} // closed once draining and every slot is free
	drainOne sync.Once
	// closedLatency holds the publish-to-write times of the connections
	// and streams that have ended (metrics.go).
	closedLatency histogram.Snapshot

	stats serverStats

	writers writerPool // the goroutines connections' writers run on

	// testCloseGrace, when positive, replaces closeGrace: tests lengthen
	// it so that what they check cannot race the grace on a slow machine.
	testCloseGrace time.Duration
	// testBlockingReads keeps every reader blocked on its socket, as
	// where the socket cannot be polled, for the tests of that path.
	testBlockingReads bool
}

type serverStats struct {
	open     atomic.Int64
	accepted atomic.Int64
	commands atomic.Int64
	closes   [len(closeTable)]atomic.Int64
	refused  [len(refusalNames)]atomic.Int64
	errors   sync.Map // broker.Code → *atomic.Int64

	authOK, authRefused atomic.Int64

	streams, streamsAccepted atomic.Int64

	published atomic.Int64
	ends      endCounts
}

// Stats is a snapshot of a Server's counters, for metrics.
type Stats struct {
	Open     int64                 // connections open now
	Accepted int64                 // connections accepted
	Commands int64                 // client commands handled
	Closes   map[int]int64         // server-initiated closes by close code
	Refused  map[string]int64      // upgrades refused with an HTTP status, by Refused* reason
	Errors   map[broker.Code]int64 // error frames sent by code
	// AuthOK and AuthRefused count credentials checked, from upgrade
	// headers, auth frames and event streams' requests.
	AuthOK, AuthRefused int64
	// Streams counts the Server-Sent Events streams open now (not in
	// Open), StreamsAccepted those started. Their refusals count in
	// Refused, their closes in Closes by the close code a WebSocket would
	// have had, their error events in Errors.
	Streams, StreamsAccepted int64

	// Published counts the messages clients published (appended to the
	// backlog; a duplicate of an idempotent publish is not).
	Published int64
	// Ends counts the connections and streams that ended, by transport,
	// by whom and close code, the client's included (Closes counts the
	// server's closes alone).
	Ends map[End]int64
	// PublishToWrite holds, for every live message written to a client,
	// the seconds from its publication (its ID's time: Redis's clock with
	// the Redis backlog) to its write to the socket (the gateway's clock:
	// when a WebSocket frame's write starts, when an event stream's batch
	// is flushed); clocks apart make it off by their difference, and a
	// negative time counts as 0. Replayed messages are not timed.
	PublishToWrite histogram.Snapshot
	// QueueFill holds the fill of every open connection's and stream's
	// send queue: the larger of its frame and byte shares of
	// SendQueueFrames and SendQueueBytes, from 0 (empty) to 1.
	QueueFill histogram.Snapshot
}

// New returns a Server over hub.
func New(hub *broker.Hub, cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, hub: hub, conns: make(map[*conn]struct{}), streams: make(map[*stream]struct{}), perIP: make(map[netip.Addr]int), drained: make(chan struct{})}
	s.origins = newOrigins(cfg.AllowedOrigins, cfg.Logger)
	s.upgrader = websocket.Upgrader{
		// negotiate chooses the subprotocol, which may be a listener
		// token, and Upgrade answers what it chose.
		// ServeHTTP has checked the origin, with an answer that names
		// the setting to change.
		CheckOrigin:      func(*http.Request) bool { return true },
		HandshakeTimeout: cfg.HandshakeTimeout,
		// 0: gorilla reads through the buffer batchWriter hands it.
		ReadBufferSize:  0,
		WriteBufferSize: 4096,
		// Most connections are idle most of the time: they borrow a write
		// buffer only while writing instead of holding 4 KiB each.
		WriteBufferPool: &sync.Pool{},
		// Errors before the upgrade are plain HTTP: the client is not
		// speaking WebSocket yet.
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			http.Error(w, reason.Error(), status)
		},
	}
	return s
}

// Shutdown tells every client to reconnect elsewhere (close code 1001; an
// event stream ends with event: shutdown), then
// waits until they have gone or ctx is done, when it cuts the rest off. New
// connections are refused from the start (HTTP 503). http.Server.Shutdown does not
// track upgraded connections, which is why this exists.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.checkDrained()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(CloseShutdown)
	}
	for _, st := range streams {
		st.close(CloseShutdown)
	}
	select {
	case <-s.drained:
		s.writers.stop()
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.shut()
	}
	for st := range s.streams {
		st.fail()
	}
	s.mu.Unlock()
	return ctx.Err()
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Open:     s.stats.open.Load(),
		Accepted: s.stats.accepted.Load(),
		Commands: s.stats.commands.Load(),
		Closes:   make(map[int]int64),
		Refused:  make(map[string]int64),
		Errors:   make(map[broker.Code]int64),

		AuthOK:      s.stats.authOK.Load(),
		AuthRefused: s.stats.authRefused.Load(),

		Streams:         s.stats.streams.Load(),
		StreamsAccepted: s.stats.streamsAccepted.Load(),

		Published: s.stats.published.Load(),
		Ends:      make(map[End]int64),
	}
	s.stats.ends.snapshot(st.Ends)
	// Under the lock, so that a connection's times are counted once, as
	// open or as gone.
	s.mu.Lock()
	st.PublishToWrite = histogram.Snapshot{Bounds: publishToWriteBounds, Counts: make([]uint64, len(publishToWriteBounds)+1)}
	s.collectLatencyLocked(&st.PublishToWrite)
	st.QueueFill = s.queueFillLocked()
	s.mu.Unlock()
	for r := range s.stats.refused {
		if n := s.stats.refused[r].Load(); n > 0 {
			st.Refused[refusalNames[r]] = n
		}
	}
	for r := range s.stats.closes {
		if n := s.stats.closes[r].Load(); n > 0 {
			st.Closes[CloseReason(r).Code()] = n
		}
	}
	s.stats.errors.Range(func(k, v any) bool {
		st.Errors[k.(broker.Code)] = v.(*atomic.Int64).Load()
		return true
	})
	return st
}

func (s *Server) countError(code broker.Code) {
	v, ok := s.stats.errors.Load(code)
	if !ok {
		v, _ = s.stats.errors.LoadOrStore(code, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}
