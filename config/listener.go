package config

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tslm/tslm/auth"
	"github.com/tslm/tslm/gateway"
)

// listenerTable is a [listener.NAME] table: the original TSLM's keys, then
// TSLM's.
type listenerTable struct {
	IP                         *string   `toml:"ip"`
	Port                       *int64    `toml:"port"`
	DefaultEndpointPermissions *[]string `toml:"default_endpoint_permissions"`
	AuthTokens                 *[]string `toml:"auth_tokens"`
	MaxMessageSize             *int64    `toml:"max_message_size"`
	MaxFrameSize               *int64    `toml:"max_frame_size"`
	MaxConnections             *int64    `toml:"max_connections"`
	RateLimitPerSecond         *float64  `toml:"rate_limit_per_second"`
	ChannelBufferSize          *int64    `toml:"channel_buffer_size"`

	Auth                *string `toml:"auth"`
	TLSCert             *string `toml:"tls_cert"`
	TLSKey              *string `toml:"tls_key"`
	MaxConnectionsPerIP *int64  `toml:"max_connections_per_ip"`
}

// The listeners' default hosts and ports, as gateway.Config's defaults
// (":8080", "127.0.0.1:8081") have them; a further listener's host is the
// public one's, and it has no default port.
const (
	publicHost   = ""
	publicPort   = 8080
	internalHost = "127.0.0.1"
	internalPort = 8081
)

// shortToken is the length under which a listener token is worth a
// warning: 16 random bytes are out of reach of guessing, six letters are
// not.
const shortToken = 16

// role is what a listener serves: README "Listeners and roles".
type role int

const (
	rolePublic   role = iota // the listener named public
	roleInternal             // internal, or the original TSLM's private
	roleFurther              // any other name: public-role, its own settings
)

// boundListener is a listener table with its name and resolved address.
type boundListener struct {
	name string
	key  string // "listener.NAME"
	role role
	t    listenerTable
	host string
	port int64 // 0: none given (a further listener without port)
	// field is the gateway.Config field path of its settings, for
	// errors: "Public…", "Internal…" or "Listeners[NAME].…".
	field func(public, internal, further string) string
	// Where the listener's settings go: further is its entry of
	// Config.Listeners, nil for the public and internal listeners.
	further *gateway.Listener
	limits  *gateway.ListenerLimits
	tokens  *[]auth.Secret
}

func (l *loader) listeners(tables map[string]listenerTable) {
	var bound []*boundListener
	var internal *boundListener
	hasPublic := false
	for _, name := range sortedKeys(tables) {
		b := &boundListener{name: name, key: "listener." + name, t: tables[name]}
		switch name {
		case "public":
			hasPublic = true
			b.role, b.host, b.port = rolePublic, publicHost, publicPort
			b.limits, b.tokens = &l.cfg.PublicLimits, &l.cfg.PublicAuthTokens
		case "internal", "private":
			if internal != nil {
				l.fail(b.key, "listener.internal and listener.private are the same listener (private is the original TSLM's name for it): keep one")
				continue
			}
			internal = b
			b.role, b.host, b.port = roleInternal, internalHost, internalPort
			b.limits, b.tokens = &l.cfg.InternalLimits, &l.cfg.InternalAuthTokens
		default:
			if strings.TrimSpace(name) == "" {
				l.fail(b.key, "a listener needs a name: write [listener.NAME]")
				continue
			}
			b.role, b.host = roleFurther, publicHost
			l.cfg.Listeners = append(l.cfg.Listeners, gateway.Listener{Name: name})
		}
		bound = append(bound, b)
	}
	// Pointers into Listeners once it has stopped growing.
	further := 0
	for _, b := range bound {
		prefix := "Listeners[" + b.name + "]."
		b.field = func(public, internal, further string) string {
			switch b.role {
			case rolePublic:
				return public
			case roleInternal:
				return internal
			}
			return prefix + further
		}
		if b.role == roleFurther {
			b.further = &l.cfg.Listeners[further]
			further++
			b.limits, b.tokens = &b.further.Limits, &b.further.AuthTokens
		}
		l.listener(b)
	}
	// The file names the listeners that open, as the original TSLM's
	// did: without [listener.public], TSLM's default public listener
	// does not open either.
	if len(bound) > 0 && !hasPublic {
		l.cfg.PublicOff = true
		l.set("PublicOff", bound[0].key)
		if len(l.cfg.Listeners) == 0 {
			l.warnf(bound[0].key, "the file names no listener but this one, and no public-role listener opens: add [listener.public] for TSLM's public listener (port 8080 by default), or set TSLM_PUBLIC_ADDRS")
		}
	}
	// A clash is reported at the listener written later.
	slices.SortStableFunc(bound, func(a, b *boundListener) int {
		pa, _ := l.ix.find(a.key)
		pb, _ := l.ix.find(b.key)
		return cmp.Compare(pa.line, pb.line)
	})
	for i, a := range bound {
		for _, b := range bound[i+1:] {
			if clash(a, b) {
				l.fail(b.key+".port", "the address %s clashes with %s's %s: give each listener its own port",
					net.JoinHostPort(b.host, strconv.FormatInt(b.port, 10)), a.key,
					net.JoinHostPort(a.host, strconv.FormatInt(a.port, 10)))
			}
		}
	}
}

// clash reports whether two listeners would bind the same port: the same
// host, or one of them on every interface.
func clash(a, b *boundListener) bool {
	if a.port != b.port || a.port == 0 {
		return false
	}
	return a.host == b.host || unspecified(a.host) || unspecified(b.host)
}

func unspecified(host string) bool {
	ip, err := netip.ParseAddr(host)
	return host == "" || err == nil && ip.IsUnspecified()
}

// limits maps the listener's own limits: TSLM applies each to this
// listener alone, as the original did.
func (l *loader) limits(b *boundListener) {
	for _, lim := range []struct {
		key, field string
		v          *int64
		apply      func(int64)
	}{
		{"max_message_size", "MaxDataBytes", b.t.MaxMessageSize, func(v int64) { b.limits.MaxDataBytes = int(v) }},
		{"max_frame_size", "MaxFrameBytes", b.t.MaxFrameSize, func(v int64) { b.limits.MaxFrameBytes = v }},
		{"max_connections", "MaxConnections", b.t.MaxConnections, func(v int64) { b.limits.MaxConnections = int(v) }},
		{"channel_buffer_size", "SendQueue", b.t.ChannelBufferSize, func(v int64) { b.limits.SendQueue = int(v) }},
	} {
		key := b.key + "." + lim.key
		if lim.key == "channel_buffer_size" && lim.v != nil && *lim.v == 0 {
			// The original's 0 said unbounded; TSLM bounds every
			// send queue, and closes a client that falls that far
			// behind (it resumes).
			l.warnf(key, "0 meant unbounded to the original TSLM; TSLM bounds every client's send queue, and keeps its default (TSLM_SEND_QUEUE) here")
			continue
		}
		if v, ok := l.positive(key, lim.v); ok {
			lim.apply(v)
			l.set(b.field("PublicLimits."+lim.field, "InternalLimits."+lim.field, "Limits."+lim.field), key)
		}
	}
}

// tokens maps the listener's auth_tokens; no message names a token.
func (l *loader) tokens(b *boundListener) {
	if b.t.AuthTokens == nil {
		return
	}
	key := b.key + ".auth_tokens"
	if len(*b.t.AuthTokens) == 0 {
		l.fail(key, "names no token, which would admit nobody: leave the key out for a listener without tokens")
		return
	}
	for i, tok := range *b.t.AuthTokens {
		ikey := fmt.Sprintf("%s[%d]", key, i)
		if err := auth.CheckListenerToken(auth.Secret(tok)); err != nil {
			l.fail(ikey, "the token %v", err)
			continue
		}
		if len(tok) < shortToken {
			l.warnf(ikey, "the token is %d bytes long: one under %d bytes can be guessed; make one with `openssl rand -hex 16`", len(tok), shortToken)
		}
		*b.tokens = append(*b.tokens, auth.Secret(tok))
	}
	l.set(b.field("PublicAuthTokens", "InternalAuthTokens", "AuthTokens"), key)
}

// listener maps one listener table onto the Config.
func (l *loader) listener(b *boundListener) {
	t, key := b.t, b.key
	public, internal, further := b.role == rolePublic, b.role == roleInternal, b.further
	l.tokens(b)
	l.limits(b)

	if t.IP != nil {
		if _, err := netip.ParseAddr(*t.IP); err != nil {
			l.fail(key+".ip", "%q is not an IP address: write one such as \"0.0.0.0\" (every interface), \"127.0.0.1\" or \"::1\"", *t.IP)
		}
		b.host = *t.IP
	}
	if t.Port != nil {
		if *t.Port < 1 || *t.Port > 65535 {
			l.fail(key+".port", "%d is out of range: a port is 1-65535", *t.Port)
		}
		b.port = *t.Port
	}
	switch {
	case further != nil && t.Port == nil:
		l.fail(key, "the listener has no port: write port = N (and ip, every interface if left out)")
	case t.IP != nil || t.Port != nil:
		addr := []string{net.JoinHostPort(b.host, strconv.FormatInt(b.port, 10))}
		switch {
		case public:
			l.cfg.PublicAddrs = addr
		case internal:
			l.cfg.InternalAddrs = addr
		default:
			further.Addrs = addr
		}
		l.set(b.field("PublicAddrs", "InternalAddrs", "Addrs"), key)
	}

	if t.DefaultEndpointPermissions != nil {
		pkey := key + ".default_endpoint_permissions"
		set, ok := l.ops(pkey, *t.DefaultEndpointPermissions)
		switch {
		case !ok:
		case set == 0:
			l.fail(pkey, "names no operation: a listener without any would be useless; name at least one, such as [\"subscribe\"]")
		case internal && set != auth.AllOps:
			l.warnf(pkey, "the internal listener allows every operation (%s), not only %s: restrict it with auth = \"required\" and grants (see docs/config.md)", auth.AllOps, set)
		case internal:
		case public:
			l.cfg.PublicAllow = strings.Split(set.String(), ",")
			l.set("PublicAllow", pkey)
		default:
			further.Allow = strings.Split(set.String(), ",")
			l.set(b.field("", "", "Allow"), pkey)
		}
	}

	if t.RateLimitPerSecond != nil {
		rkey := key + ".rate_limit_per_second"
		if v := *t.RateLimitPerSecond; l.number(rkey, v) {
			if v == 0 {
				v = gateway.Unlimited // as with the variables, 0 says unlimited
			}
			switch {
			case public:
				l.cfg.PublicRate = v
			case internal:
				l.cfg.InternalRate = v
			default:
				further.Rate = v
			}
			l.set(b.field("PublicRate", "InternalRate", "Rate"), rkey)
		}
	}

	if t.Auth != nil {
		akey := key + ".auth"
		if _, err := auth.ParseMode(*t.Auth); err != nil || *t.Auth == "" {
			l.fail(akey, "unknown auth mode %q: want \"off\", \"optional\" or \"required\"", *t.Auth)
		} else {
			switch {
			case public:
				l.cfg.PublicAuth = *t.Auth
			case internal:
				l.cfg.InternalAuth = *t.Auth
			default:
				further.Auth = *t.Auth
			}
			l.set(b.field("PublicAuth", "InternalAuth", "Auth"), akey)
		}
	}

	switch {
	case (t.TLSCert == nil) != (t.TLSKey == nil):
		missing, given := "tls_key", "tls_cert"
		if t.TLSCert == nil {
			missing, given = given, missing
		}
		l.fail(key+"."+given, "a TLS certificate and its key go together: set %s too", missing)
	case t.TLSCert != nil:
		cert, tlsKey := l.filePath(*t.TLSCert), l.filePath(*t.TLSKey)
		if *t.TLSCert == "" || *t.TLSKey == "" {
			l.fail(key+".tls_cert", "tls_cert and tls_key name files: neither may be empty")
			break
		}
		switch {
		case public:
			l.cfg.PublicTLSCert, l.cfg.PublicTLSKey = cert, tlsKey
		case internal:
			l.cfg.InternalTLSCert, l.cfg.InternalTLSKey = cert, tlsKey
		default:
			further.TLSCert, further.TLSKey = cert, tlsKey
		}
		l.set(b.field("PublicTLSCert", "InternalTLSCert", "TLSCert"), key+".tls_cert")
		l.set(b.field("PublicTLSKey", "InternalTLSKey", "TLSKey"), key+".tls_key")
	}

	if t.MaxConnectionsPerIP != nil {
		ckey := key + ".max_connections_per_ip"
		if internal {
			l.fail(ckey, "the internal listener has no per-address limit: its clients are your own apps; set it on a public-role listener")
		} else if v, ok := l.positive(ckey, t.MaxConnectionsPerIP); ok {
			if public {
				l.cfg.MaxConnectionsPerIP = int(v)
			} else {
				further.MaxConnectionsPerIP = int(v)
			}
			l.set(b.field("MaxConnectionsPerIP", "", "MaxConnectionsPerIP"), ckey)
		}
	}
}
