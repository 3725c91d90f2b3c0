package gateway

import (
	"crypto/tls"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tslm/tslm/auth"
	jsclient "github.com/tslm/tslm/clients/js"
	"github.com/tslm/tslm/ws"
)

// Listeners: the public listener, the further public-role listeners a
// config file names (the original TSLM's files name theirs freely), and
// the internal listener. README "Listeners and roles" says what each
// serves: every one the original endpoint (/), /v1/ws, /v1/sse and
// /healthz; the internal one also the HTTP API, /readyz, /metrics and
// pprof, which no public-role listener serves.

// ListenerLimits are the limits a listener sets for itself, as the
// original TSLM's listeners did; a zero field means the Config's
// process-wide value of the same limit.
type ListenerLimits struct {
	MaxFrameBytes  int64 // Config.MaxFrameBytes
	MaxDataBytes   int   // Config.MaxDataBytes
	MaxConnections int   // Config.MaxConnections
	SendQueue      int   // Config.SendQueue, in frames
}

// Listener is a further public-role listener: it serves what the public
// listener serves, with its own addresses, permissions, limits, auth mode
// and tokens. Zero values mean the public listener's defaults, which
// TSLM_PUBLIC_* variables do not change: only a config file sets these.
type Listener struct {
	// Name labels the listener in logs and metrics; unique, and none of
	// "public", "internal" or "private".
	Name string
	// Addrs are its addresses, host:port; at least one.
	Addrs []string
	// Allow names the operations its clients may perform (see
	// ws.ParseOps); nil means subscribe only.
	Allow []string
	// Rate is the commands per second a connection may send; 0 means 50,
	// Unlimited means unlimited. Burst: 0 means 100.
	Rate  float64
	Burst int
	// Auth is its auth.Mode by name; "" means off.
	Auth string
	// AuthTokens, when any, admit clients: see PublicAuthTokens.
	AuthTokens []auth.Secret
	// TLSCert and TLSKey: both or neither, as the public listener's.
	TLSCert, TLSKey string
	// MaxConnectionsPerIP: 0 means 256.
	MaxConnectionsPerIP int
	Limits              ListenerLimits
}

// reservedNames are the listener names a Listener may not take.
var reservedNames = []string{"public", "internal", "private"}

// spec is one listener resolved from a Config after WithDefaults: what
// Validate checks and Start opens, with the Config fields each setting
// came from, for errors.
type spec struct {
	name     string
	internal bool
	addrs    []string
	allow    []string // nil: every operation (internal)
	rate     float64
	burst    int
	auth     string
	tokens   []auth.Secret
	tlsCert  string
	tlsKey   string
	perIP    int // 0: none (internal)
	own      ListenerLimits
	limits   ListenerLimits // own over the process-wide values
	fields   specFields
}

// specFields name the Config fields of a spec's settings.
type specFields struct {
	addrs, allow, rate, auth, tokens, tlsCert, tlsKey, perIP, limits string
}

// specs resolves every listener of c, after WithDefaults: the public
// listener (unless PublicOff), the further ones in order, the internal
// listener last.
func (c *Config) specs() []spec {
	var out []spec
	if !c.PublicOff {
		out = append(out, spec{name: "public", addrs: c.PublicAddrs, allow: c.PublicAllow, rate: c.PublicRate, burst: c.PublicBurst,
			auth: c.PublicAuth, tokens: c.PublicAuthTokens, tlsCert: c.PublicTLSCert, tlsKey: c.PublicTLSKey, perIP: c.MaxConnectionsPerIP, own: c.PublicLimits,
			fields: specFields{"PublicAddrs", "PublicAllow", "PublicRate", "PublicAuth", "PublicAuthTokens", "PublicTLSCert", "PublicTLSKey", "MaxConnectionsPerIP", "PublicLimits"}})
	}
	for _, l := range c.Listeners {
		f := "Listeners[" + l.Name + "]."
		out = append(out, spec{name: l.Name, addrs: l.Addrs, allow: l.Allow, rate: l.Rate, burst: l.Burst,
			auth: l.Auth, tokens: l.AuthTokens, tlsCert: l.TLSCert, tlsKey: l.TLSKey, perIP: l.MaxConnectionsPerIP, own: l.Limits,
			fields: specFields{f + "Addrs", f + "Allow", f + "Rate", f + "Auth", f + "AuthTokens", f + "TLSCert", f + "TLSKey", f + "MaxConnectionsPerIP", f + "Limits"}})
	}
	out = append(out, spec{name: "internal", internal: true, addrs: c.InternalAddrs, rate: c.InternalRate, burst: c.InternalBurst,
		auth: c.InternalAuth, tokens: c.InternalAuthTokens, tlsCert: c.InternalTLSCert, tlsKey: c.InternalTLSKey, own: c.InternalLimits,
		fields: specFields{"InternalAddrs", "", "InternalRate", "InternalAuth", "InternalAuthTokens", "InternalTLSCert", "InternalTLSKey", "", "InternalLimits"}})
	for i := range out {
		s := &out[i]
		s.limits = ListenerLimits{
			MaxFrameBytes:  cmpOr(s.own.MaxFrameBytes, c.MaxFrameBytes),
			MaxDataBytes:   cmpOr(s.own.MaxDataBytes, c.MaxDataBytes),
			MaxConnections: cmpOr(s.own.MaxConnections, c.MaxConnections),
			SendQueue:      cmpOr(s.own.SendQueue, c.SendQueue),
		}
	}
	return out
}

func cmpOr[T int | int64](v, def T) T {
	if v != 0 {
		return v
	}
	return def
}

// withListenerDefaults is WithDefaults's share for the further listeners,
// on a copy of the slice, which c shares with its caller.
func (c *Config) withListenerDefaults() {
	if len(c.Listeners) == 0 {
		return
	}
	ls := make([]Listener, len(c.Listeners))
	copy(ls, c.Listeners)
	wsDef := ws.Config{}.WithDefaults()
	for i := range ls {
		l := &ls[i]
		if len(l.Allow) == 0 {
			l.Allow = []string{wsDef.Allow.String()}
		}
		orDefault(&l.Rate, defaultPublicRate)
		orDefault(&l.Burst, defaultPublicBurst)
		if l.Auth == "" {
			l.Auth = auth.ModeOff.String()
		}
		orDefault(&l.MaxConnectionsPerIP, defaultMaxConnectionsPerIP)
	}
	c.Listeners = ls
}

// validateListeners checks every listener's own settings, after
// WithDefaults.
func (c *Config) validateListeners() error {
	seen := make(map[string]bool)
	for _, l := range c.Listeners {
		f := "Listeners[" + l.Name + "]"
		switch {
		case l.Name == "":
			return invalid("Listeners", "a listener has no name")
		case seen[l.Name] || slices.Contains(reservedNames, l.Name):
			return invalid(f+".Name", "is taken: each listener has its own name, and %q are TSLM's", reservedNames)
		case len(l.Addrs) == 0:
			return invalid(f+".Addrs", "has no address: give host:port, such as 0.0.0.0:8090")
		case l.Burst < 0 || l.MaxConnectionsPerIP < 0:
			return invalid(f, "has a negative burst or per-address limit")
		}
		seen[l.Name] = true
	}
	for _, s := range c.specs() {
		if err := s.validate(); err != nil {
			return err
		}
	}
	return nil
}

// validate checks a spec's settings that the flat fields' checks do not
// cover for every listener.
func (s *spec) validate() error {
	for _, a := range s.addrs {
		if strings.TrimSpace(a) == "" {
			return invalid(s.fields.addrs, "has an empty address: give host:port, such as 127.0.0.1:8080 or :8080")
		}
	}
	if s.allow != nil {
		if _, err := ws.ParseOps(s.allow); err != nil {
			return &ConfigError{Field: s.fields.allow, Err: err}
		}
	}
	if math.IsNaN(s.rate) || math.IsInf(s.rate, 0) {
		return invalid(s.fields.rate, "must be a finite number")
	}
	if _, err := auth.ParseMode(s.auth); err != nil {
		return &ConfigError{Field: s.fields.auth, Err: err}
	}
	for i, tok := range s.tokens {
		// The token itself is never in the message.
		if err := auth.CheckListenerToken(tok); err != nil {
			return invalid(s.fields.tokens, "token %d %v", i+1, err)
		}
	}
	if (s.tlsCert == "") != (s.tlsKey == "") {
		return conflict(s.fields.tlsCert, s.fields.tlsKey, "a TLS certificate and its key go together: set both or neither")
	}
	lim := s.fields.limits + "."
	for _, v := range []struct {
		field string
		n     int64
	}{
		{"MaxFrameBytes", s.own.MaxFrameBytes}, {"MaxDataBytes", int64(s.own.MaxDataBytes)},
		{"MaxConnections", int64(s.own.MaxConnections)}, {"SendQueue", int64(s.own.SendQueue)},
	} {
		if v.n < 0 {
			return invalid(lim+v.field, "must be positive")
		}
	}
	if int64(s.limits.MaxDataBytes) >= s.limits.MaxFrameBytes && (s.own.MaxDataBytes != 0 || s.own.MaxFrameBytes != 0) {
		// The listener's own limit is the field at fault, the other
		// related: a config file names the line of its own.
		field, related := lim+"MaxDataBytes", lim+"MaxFrameBytes"
		switch {
		case s.own.MaxDataBytes == 0:
			field, related = lim+"MaxFrameBytes", "MaxDataBytes"
		case s.own.MaxFrameBytes == 0:
			related = "MaxFrameBytes"
		}
		return conflict(field, related, "the largest publish (%d) must be less than the frame limit (%d): a publish frame wraps its data", s.limits.MaxDataBytes, s.limits.MaxFrameBytes)
	}
	return nil
}

// validateListenerCredentials: a listener that checks credentials needs
// some to check (validateCredentials says why).
func (c *Config) validateListenerCredentials() error {
	if hasPublisherKeys(c.Publishers) || c.OIDCIssuer != "" {
		return nil
	}
	for _, s := range c.specs() {
		if m, _ := auth.ParseMode(s.auth); m != auth.ModeOff {
			return conflict(s.fields.auth, "OIDCIssuer", "is %q, but no credentials are configured (no API keys, no token keys, no OpenID provider): nobody could authenticate", s.auth)
		}
	}
	return nil
}

// mode is a spec's auth mode; Validate has checked its name.
func (s *spec) mode() auth.Mode {
	m, _ := auth.ParseMode(s.auth)
	return m
}

// ops is what a spec's clients may do: its allow list, every operation on
// the internal listener.
func (s *spec) ops() ws.Ops {
	if s.internal {
		return ws.OpAll
	}
	ops, _ := ws.ParseOps(s.allow) // checked by Validate
	return ops
}

// listener is an open listener: its WebSocket server and HTTP server.
type listener struct {
	spec
	ws   *ws.Server
	tls  *tls.Config // nil: plain TCP
	lns  []net.Listener
	http *http.Server
}

// mux routes a listener's requests. The original endpoint is GET /, an
// upgrade; on the public listener with the demo on, a plain GET / is the
// demo page instead, and the demo's files are served besides.
func (g *Gateway) mux(l *listener) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /v1/ws", l.ws)
	mux.HandleFunc("GET /v1/sse", l.ws.ServeSSE)
	mux.HandleFunc("GET /healthz", healthz)
	root := l.ws.ServeLegacy
	if g.cfg.Demo && l.name == "public" {
		demo := http.NewServeMux()
		jsclient.Register(demo)
		mux.Handle("/", demo) // the demo's files; 404 for the rest
		root = func(w http.ResponseWriter, r *http.Request) {
			if websocket.IsWebSocketUpgrade(r) {
				l.ws.ServeLegacy(w, r)
				return
			}
			demo.ServeHTTP(w, r)
		}
	}
	mux.HandleFunc("GET /{$}", root)
	if !l.internal {
		return mux
	}
	mux.HandleFunc("GET /readyz", g.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metricsRegistry(), promhttp.HandlerOpts{}))
	if g.cfg.Pprof {
		registerPprof(mux)
	}
	g.api.Register(mux)
	return mux
}
