package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/broker"
	"github.com/tslm/tslm/httpapi"
	"github.com/tslm/tslm/internal/clientip"
	"github.com/tslm/tslm/internal/tlsreload"
	"github.com/tslm/tslm/ws"
)

// Gateway is a running TSLM replica: its backlog, hub and listeners.
type Gateway struct {
	cfg    Config
	logger *slog.Logger
	log    backlog.Log
	hub    *broker.Hub

	// Security (security.go): who may do what, decided on every path.
	authn         *auth.Authenticator // nil when no credentials are configured
	closeOIDC     func()
	oidcAttempted <-chan struct{} // nil without an OpenID provider
	policy        *auth.Policy

	// listeners are every listener (listeners.go), public-role ones
	// first, the internal one last; public is nil when Config.PublicOff.
	listeners        []*listener
	public, internal *listener
	api              *httpapi.API
	budget           *ws.SendBudget // shared by every listener's server
	clientIP         func(*http.Request) netip.Addr
	serveWG          sync.WaitGroup

	// draining turns /readyz to 503 from the stop signal on, so that load
	// balancers send new clients elsewhere before this replica closes the
	// ones it has.
	draining atomic.Bool
}

// Start opens the backlog and the listeners and starts serving. Zero
// fields of cfg take their defaults; a nil logger means slog.Default().
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Gateway, error) {
	if logger == nil {
		logger = slog.Default()
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, logger: logger, closeOIDC: func() {}, budget: ws.NewSendBudget(cfg.SendQueueBudget)}
	proxies, _ := clientip.Parse(cfg.TrustedProxies) // checked by Validate
	g.clientIP = proxies.ClientIP
	// Certificates are read before anything starts, so that a wrong path
	// stops start-up rather than the first handshake.
	for _, sp := range cfg.specs() {
		l := &listener{spec: sp}
		var err error
		if l.tls, err = loadTLS(sp.fields.tlsCert, sp.fields.tlsKey, sp.tlsCert, sp.tlsKey, logger); err != nil {
			return nil, err
		}
		g.listeners = append(g.listeners, l)
		switch {
		case sp.internal:
			g.internal = l
		case sp.name == "public":
			g.public = l
		}
	}
	if err := g.openSecurity(ctx); err != nil {
		return nil, err
	}
	if err := g.openBacklog(ctx); err != nil {
		g.closeOIDC()
		return nil, err
	}
	if err := g.awaitOIDC(ctx); err != nil {
		g.closeCore()
		return nil, err
	}
	g.hub = broker.New(g.log, g.hubConfig())
	for _, l := range g.listeners {
		l.ws = ws.New(g.hub, g.wsConfig(&l.spec))
	}
	g.api = httpapi.New(g.hub, g.apiConfig())
	for i, l := range g.listeners {
		var err error
		if l.lns, err = listen(l.addrs, l.tls); err != nil {
			for _, opened := range g.listeners[:i] {
				closeAll(opened.lns)
			}
			g.closeCore()
			return nil, &ConfigError{Field: l.fields.addrs, Err: err}
		}
	}
	for _, l := range g.listeners {
		l.http = g.serve(l.name, g.mux(l), l.lns, l.tls != nil)
	}
	return g, nil
}

// hubConfig is the hub's share of the gateway's configuration.
func (g *Gateway) hubConfig() broker.Config {
	return broker.Config{
		DefaultMaxLen:     g.cfg.DefaultMaxLen,
		DefaultRetention:  g.cfg.DefaultRetention,
		MaxMaxLen:         g.cfg.ChannelMaxLenLimit,
		MaxRetention:      g.cfg.ChannelRetentionLimit,
		ReplayBuffer:      g.cfg.ReplayBuffer,
		ReplayPage:        g.cfg.ReplayPage,
		ReplayPageBytes:   g.cfg.ReplayPageBytes,
		ReplayBytes:       g.cfg.ReplayBytes,
		ReplayWait:        g.cfg.ReplayWait,
		ReplayOvertakes:   g.cfg.ReplayOvertakes,
		MaxLast:           g.cfg.MaxLast,
		ReadBatch:         g.cfg.ReadBatch,
		TrimInterval:      g.cfg.TrimInterval,
		OperationTimeout:  g.cfg.OperationTimeout,
		IdempotencyWindow: g.cfg.IdempotencyWindow,
		RequestTimeout:    g.cfg.RequestTimeout,
		MaxRequestTimeout: g.cfg.MaxRequestTimeout,
		MaxInflight:       g.cfg.MaxInflightRequests,
		SessionTTL:        g.cfg.SessionTTL,
		SessionReplies:    g.cfg.SessionReplies,
		ServeInflight:     g.cfg.ServeInflight,
		ReclaimAfter:      g.cfg.RequestReclaimAfter,
		ChannelDefaults:   g.channelDefaults,
		Logger:            g.logger,
	}
}

// apiConfig is the HTTP API's share, on the internal listener, whose
// limits, mode and tokens it shares.
func (g *Gateway) apiConfig() httpapi.Config {
	in := &g.internal.spec
	c := httpapi.Config{MaxDataBytes: int64(in.limits.MaxDataBytes), MaxReadLimit: g.cfg.MaxReadLimit, MaxListLimit: g.cfg.MaxListLimit, Logger: g.logger,
		AuthMode: in.mode(), Policy: g.policy, Tokens: auth.NewListenerTokens(in.tokens)}
	if g.authn != nil {
		c.Authenticator = g.authn
	}
	return c
}

func (g *Gateway) openBacklog(ctx context.Context) error {
	if g.cfg.RedisURL == "" {
		g.log = backlog.NewMemory(g.memoryConfig())
		g.logger.Warn("no Redis (TSLM_REDIS_URL, or url in the config file's [redis]): running on the in-memory backlog (single node, not durable: messages are lost on exit)")
		return nil
	}
	return g.openRedis(ctx)
}

func (g *Gateway) memoryConfig() backlog.MemoryConfig {
	return backlog.MemoryConfig{MaxChannels: g.cfg.MaxChannels, MaxIdempotencyKeys: g.cfg.MaxIdempotencyKeys, MaxRequests: g.cfg.MaxQueuedRequests}
}

func (g *Gateway) redisConfig() backlog.RedisConfig {
	// Every hub reader holds one dedicated connection between its Reads;
	// the cap only bounds connections left over when readers are fewer.
	return backlog.RedisConfig{KeyPrefix: g.cfg.RedisPrefix, PollInterval: g.cfg.PollInterval, MaxRequests: g.cfg.MaxQueuedRequests,
		MaxChannels: g.cfg.MaxChannels}
}

// wsConfig is a listener's WebSocket server's configuration.
func (g *Gateway) wsConfig(sp *spec) ws.Config {
	rate := sp.rate
	if rate < 0 {
		rate = 0 // ws's unlimited
	}
	c := ws.Config{
		Name:                sp.name,
		Allow:               sp.ops(),
		Public:              !sp.internal,
		AuthMode:            sp.mode(),
		AuthTimeout:         g.cfg.AuthTimeout,
		Policy:              g.policy,
		Tokens:              auth.NewListenerTokens(sp.tokens),
		MaxFrameBytes:       sp.limits.MaxFrameBytes,
		MaxDataBytes:        sp.limits.MaxDataBytes,
		SendQueueFrames:     sp.limits.SendQueue,
		SendQueueBytes:      g.cfg.SendQueueBytes,
		MaxSubscriptions:    g.cfg.MaxSubscriptions,
		MaxConnections:      sp.limits.MaxConnections,
		MaxConnectionsPerIP: sp.perIP, // none on the internal listener: its clients are trusted apps
		CommandRate:         rate,
		CommandBurst:        sp.burst,
		PingInterval:        g.cfg.PingInterval,
		PongTimeout:         g.cfg.PongTimeout,
		WriteTimeout:        g.cfg.WriteTimeout,
		AllowedOrigins:      g.cfg.AllowedOrigins,
		ClientIP:            g.clientIP,
		HandshakeTimeout:    g.cfg.HandshakeTimeout,
		SendBudget:          g.budget,
		Names:               g.cfg.Names,
		AccessLog:           g.cfg.accessLogOn(),
		Logger:              g.logger,
	}
	if g.authn != nil {
		// Not a nil *auth.Authenticator in the interface, which would
		// look set.
		c.Authenticator = g.authn
	}
	return c
}

// loadTLS reads a listener's certificate and key, when both are set (Validate
// has checked that neither goes alone); nil means plain TCP.
func loadTLS(certField, keyField, certFile, keyFile string, logger *slog.Logger) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	r, err := tlsreload.New(certFile, keyFile, logger)
	if err != nil {
		return nil, &ConfigError{Field: certField, Related: keyField, Err: err}
	}
	return r.TLSConfig(), nil
}

// listen opens addrs, serving TLS with tlsCfg unless it is nil.
func listen(addrs []string, tlsCfg *tls.Config) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			closeAll(lns)
			return nil, err
		}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// serve starts an HTTP server on lns. Its timeouts end idle keep-alive
// connections and requests that trickle in, which would otherwise hold a
// socket and a goroutine each for as long as the client likes: the
// handshake timeout bounds a TLS handshake and a request's headers, which
// is all a WebSocket upgrade reads. They do not reach WebSocket
// connections: net/http forgets a connection once it is hijacked, and ws
// sets its own deadlines before every read and write. Nor event streams:
// ws clears the read deadline once the request is read and sets a write
// deadline before every write (there is no WriteTimeout here to cut them).
func (g *Gateway) serve(name string, h http.Handler, lns []net.Listener, isTLS bool) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(g.cfg.HandshakeTimeout, g.cfg.HTTPReadTimeout),
		ReadTimeout:       g.cfg.HTTPReadTimeout,
		IdleTimeout:       g.cfg.HTTPIdleTimeout,
		ErrorLog:          slog.NewLogLogger(g.logger.Handler(), slog.LevelWarn),
	}
	for _, ln := range lns {
		g.logger.Info("listening", "listener", name, "addr", ln.Addr().String(), "tls", isTLS)
		g.serveWG.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.logger.Error("listener failed", "listener", name, "addr", ln.Addr().String(), "err", err)
			}
		})
	}
	return srv
}

// PublicAddrs are the public listener's bound addresses; none when
// Config.PublicOff.
func (g *Gateway) PublicAddrs() []net.Addr { return g.Addrs("public") }

// InternalAddrs are the internal listener's bound addresses.
func (g *Gateway) InternalAddrs() []net.Addr { return g.Addrs("internal") }

// Addrs are the bound addresses of the listener called name ("public",
// "internal", or a Config.Listeners name); none for no such listener.
func (g *Gateway) Addrs(name string) []net.Addr {
	for _, l := range g.listeners {
		if l.name == name {
			return addrsOf(l.lns)
		}
	}
	return nil
}

func addrsOf(lns []net.Listener) []net.Addr {
	addrs := make([]net.Addr, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr()
	}
	return addrs
}

// Drain marks the replica as leaving: /readyz answers 503 "draining" from
// now on, while everything else goes on serving. A balancer that checks
// /readyz stops sending new clients here; Shutdown then tells those that
// are here to reconnect, and they land elsewhere. Safe to call more than
// once, and from any goroutine.
func (g *Gateway) Drain() {
	if !g.draining.Swap(true) {
		g.logger.Info("draining: /readyz answers 503, clients stay until shutdown")
	}
}

// Draining reports whether Drain (or Shutdown) was called.
func (g *Gateway) Draining() bool { return g.draining.Load() }

// Shutdown drains (see Drain), stops accepting on the public-role
// listeners, tells every WebSocket client of every listener to reconnect
// elsewhere (1001) and ends every event stream (event: shutdown), waits
// for them until ctx is done, then closes the internal listener and
// releases everything. The internal listener goes last so that /readyz keeps
// answering "draining" and /metrics keeps being scraped while clients
// leave. It returns ctx's error when clients had to be cut off.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.Drain()
	var wg sync.WaitGroup
	var drainErr error
	var mu sync.Mutex
	run := func(steps ...func(context.Context) error) {
		for _, step := range steps {
			wg.Go(func() {
				if err := step(ctx); err != nil {
					mu.Lock()
					drainErr = err
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	var first []func(context.Context) error
	for _, l := range g.listeners {
		if !l.internal {
			first = append(first, l.http.Shutdown)
		}
		first = append(first, l.ws.Shutdown)
	}
	run(first...)
	run(g.internal.http.Shutdown)
	g.serveWG.Wait()
	g.closeCore()
	return drainErr
}

func (g *Gateway) closeCore() {
	if g.hub != nil {
		g.hub.Close()
	}
	g.log.Close()
	g.closeOIDC()
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Write([]byte("ok\n"))
}

// readyz answers 503 while the replica drains, or while the backlog does
// not answer within the operation timeout, so that a load balancer sends
// new clients to replicas that can serve them.
func (g *Gateway) readyz(w http.ResponseWriter, r *http.Request) {
	if g.Draining() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if err := g.hub.Ready(r.Context()); err != nil {
		http.Error(w, "backlog unavailable: "+broker.ErrorOf(err).Message, http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

// Hub is the gateway's hub, for tests and embedding.
func (g *Gateway) Hub() *broker.Hub { return g.hub }

func (g *Gateway) metricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	servers := make(map[string]*ws.Server, len(g.listeners))
	for _, l := range g.listeners {
		servers[l.name] = l.ws
	}
	reg.MustRegister(&collector{hub: g.hub, servers: servers, api: g.api, budget: g.budget})
	if r, ok := g.log.(closeBoth); ok {
		reg.MustRegister(r.collector())
	}
	return reg
}
