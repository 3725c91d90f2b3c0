package ws

import (
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/internal/bearer"
)

// Reasons an upgrade is refused with an HTTP status, as counted in
// Stats.Refused.
const (
	RefusedSubprotocol         = "subprotocol"            // 400: no subprotocol the endpoint speaks offered
	RefusedToken               = "token"                  // 401: no listener token, or a wrong one, on a listener that has some
	RefusedOrigin              = "origin"                 // 403: a browser origin not allowed
	RefusedMaxConnectionsPerIP = "max_connections_per_ip" // 429: the client's address has its share
	RefusedMaxConnections      = "max_connections"        // 503: the listener is full
	RefusedShutdown            = "shutdown"               // 503: the server is draining
	RefusedUnauthorized        = "unauthorized"           // 401: the Authorization header is malformed or its credential refused
)

type refusal int

const (
	refusedSubprotocol refusal = iota
	refusedOrigin
	refusedMaxConnectionsPerIP
	refusedMaxConnections
	refusedShutdown
	refusedUnauthorized
	refusedToken
)

var refusalNames = [...]string{
	refusedSubprotocol:         RefusedSubprotocol,
	refusedOrigin:              RefusedOrigin,
	refusedMaxConnectionsPerIP: RefusedMaxConnectionsPerIP,
	refusedMaxConnections:      RefusedMaxConnections,
	refusedShutdown:            RefusedShutdown,
	refusedUnauthorized:        RefusedUnauthorized,
	refusedToken:               RefusedToken,
}

// Retry-After of the 429 and 503 answers. A full listener, or address,
// stays full for a while, so its clients should stay away for longer; a draining one sends its
// clients to another replica, which the load balancer picks at once.
const (
	retryAfterFull     = 5 * time.Second
	retryAfterShutdown = time.Second
)

// ServeHTTP serves GET /v1/ws: it upgrades the request and serves the
// connection until it ends, in protocol v1 or tslm.legacy, as the client
// chose by subprotocol.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.serveUpgrade(w, r, false) }

// ServeLegacy serves the original TSLM's endpoint, GET /: every connection
// speaks tslm.legacy, whatever subprotocol (none, tslm.legacy or a
// listener token) it offered.
func (s *Server) ServeLegacy(w http.ResponseWriter, r *http.Request) { s.serveUpgrade(w, r, true) }

// serveUpgrade upgrades the request and serves the connection until it
// ends; root is the original endpoint.
// Every refusal it can decide before the upgrade is a plain HTTP answer: a
// client that is not speaking WebSocket yet should get a status, not a
// connection that opens only to close. The checks go from the cheapest to
// the dearest, so that a flood is capped before it costs any cryptography:
// handshake, listener token and subprotocol, origin, connections,
// credentials.
func (s *Server) serveUpgrade(w http.ResponseWriter, r *http.Request, root bool) {
	if !websocket.IsWebSocketUpgrade(r) {
		s.upgrader.Upgrade(w, r, nil) // answers why with a 400
		return
	}
	hs, ok := s.negotiate(w, r, root)
	if !ok {
		return
	}
	if origin := r.Header.Get("Origin"); !s.origins.allow(origin, r.Host) {
		s.refuse(w, refusedOrigin, http.StatusForbidden, 0,
			fmt.Sprintf("origin %q not allowed: add it to %s", origin, s.cfg.Names.AllowedOrigins))
		return
	}
	ip := s.cfg.ClientIP(r)
	if why, ok := s.reserve(ip); !ok {
		switch why {
		case refusedShutdown:
			s.refuse(w, why, http.StatusServiceUnavailable, retryAfterShutdown,
				"server shutting down: connect again, to another replica")
		case refusedMaxConnectionsPerIP:
			s.refuse(w, why, http.StatusTooManyRequests, retryAfterFull,
				fmt.Sprintf("too many connections from %s: this listener allows %d per client address (%s); close one, or retry later",
					ip, s.cfg.MaxConnectionsPerIP, s.cfg.Names.MaxConnectionsPerIP))
		default:
			s.refuse(w, why, http.StatusServiceUnavailable, retryAfterFull,
				fmt.Sprintf("too many connections: this listener is at its limit of %d (%s); retry later, with backoff",
					s.cfg.MaxConnections, s.cfg.Names.MaxConnections))
		}
		return
	}
	who, ok := s.credentials(w, r)
	if !ok {
		s.release(ip)
		return
	}
	var answer http.Header
	if hs.answer != "" {
		answer = http.Header{"Sec-Websocket-Protocol": {hs.answer}}
	}
	bw := &batchWriter{ResponseWriter: w}
	wsConn, err := s.upgrader.Upgrade(bw, r, answer)
	if err != nil {
		s.release(ip) // the upgrader has answered
		return
	}
	c := newConn(s, wsConn, bw.conn, bw.br, who, hs.legacy)
	c.client = ip
	if !s.admit(c) {
		// Shutdown began during the upgrade.
		s.closeUnadmitted(wsConn)
		s.release(ip)
		return
	}
	c.start()
}

// credentials authenticates the request's Authorization header, on a
// listener that checks credentials, or refuses the upgrade with 401. No
// header is no principal (nil, true). Credentials never come in the URL,
// which proxies log.
func (s *Server) credentials(w http.ResponseWriter, r *http.Request) (*auth.Principal, bool) {
	if s.cfg.AuthMode == auth.ModeOff {
		return nil, true
	}
	cred, present, ok := bearer.FromRequest(r)
	if !present {
		return nil, true
	}
	if !ok {
		s.countAuth(false)
		s.refuseUnauthorized(w, bearer.Malformed)
		return nil, false
	}
	p, perr := s.verify(r.Context(), cred)
	s.countAuth(perr == nil)
	if perr != nil {
		s.refuseUnauthorized(w, perr.Message)
		return nil, false
	}
	return p, true
}

func (s *Server) refuseUnauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", bearer.Challenge(msg))
	s.refuse(w, refusedUnauthorized, http.StatusUnauthorized, 0, msg)
}

// refuse answers a request that will not be upgraded.
func (s *Server) refuse(w http.ResponseWriter, why refusal, status int, retryAfter time.Duration, msg string) {
	s.stats.refused[why].Add(1)
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
	}
	http.Error(w, msg, status)
}

// reserve takes a connection slot, and one of ip's, for an upgrade about
// to start, or says why there is none. Taking the slots before the upgrade,
// under the lock, is what keeps two concurrent upgrades from both taking
// the last one.
func (s *Server) reserve(ip netip.Addr) (refusal, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	perIP := s.cfg.MaxConnectionsPerIP > 0
	switch {
	case s.draining:
		return refusedShutdown, false
	case perIP && s.perIP[ip] >= s.cfg.MaxConnectionsPerIP:
		return refusedMaxConnectionsPerIP, false
	case s.slots >= s.cfg.MaxConnections:
		return refusedMaxConnections, false
	}
	s.slots++
	if perIP {
		s.perIP[ip]++
	}
	return 0, true
}

// release frees the slots reserved for ip whose connection never got
// admitted.
func (s *Server) release(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unreserve(ip)
}

// unreserve expects s.mu held.
func (s *Server) unreserve(ip netip.Addr) {
	s.slots--
	if s.cfg.MaxConnectionsPerIP > 0 {
		// Deleted at zero, so that the map holds only addresses
		// connected now.
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
	}
	s.checkDrained()
}

// admit registers an upgraded connection in its reserved slot; false when
// shutdown began meanwhile.
func (s *Server) admit(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.conns[c] = struct{}{}
	s.stats.open.Add(1)
	s.stats.accepted.Add(1)
	return true
}

// forget frees an admitted connection's slot.
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	c.latency.AddTo(&s.closedLatency)
	s.stats.open.Add(-1)
	s.unreserve(c.client)
}

// checkDrained expects s.mu held.
func (s *Server) checkDrained() {
	if s.draining && s.slots == 0 {
		s.drainOne.Do(func() { close(s.drained) })
	}
}

// closeUnadmitted tells a client upgraded while shutdown began to
// reconnect elsewhere. Its socket is new and empty, so the close frame
// goes out at once.
func (s *Server) closeUnadmitted(c *websocket.Conn) {
	s.stats.closes[CloseShutdown].Add(1)
	s.stats.ends.add(false, ending{code: CloseShutdown.Code()})
	msg := websocket.FormatCloseMessage(CloseShutdown.Code(), CloseShutdown.String())
	c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	c.Close()
}
