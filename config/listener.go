package config

import (
	"net"
	"net/netip"
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

	Auth                *string `toml:"auth"`
	TLSCert             *string `toml:"tls_cert"`
	TLSKey              *string `toml:"tls_key"`
	MaxConnectionsPerIP *int64  `toml:"max_connections_per_ip"`
}

// The listeners' default hosts and ports, as gateway.Config's defaults
// (":8080", "127.0.0.1:8081") have them.
const (
	publicHost   = ""
	publicPort   = 8080
	internalHost = "127.0.0.1"
	internalPort = 8081
)

// boundListener is a listener table with its name and resolved address.
type boundListener struct {
	key  string // "listener.NAME"
	t    listenerTable
	host string
	port int64
}

func (l *loader) listeners(tables map[string]listenerTable) {
	var public, internal *boundListener
	for _, name := range sortedKeys(tables) {
		b := &boundListener{key: "listener." + name, t: tables[name]}
		switch name {
		case "public":
			public = b
			b.host, b.port = publicHost, publicPort
		case "internal", "private":
			if internal != nil {
				l.fail(b.key, "listener.internal and listener.private are the same listener (private is the original TSLM's name for it): keep one")
				continue
			}
			internal = b
			b.host, b.port = internalHost, internalPort
		default:
			l.fail(b.key, "unknown listener %q: TSLM has two, public (for subscribers) and internal (for publishers and apps; the original TSLM's private)", name)
			continue
		}
		l.listener(b, name == "public")
	}
	if public != nil && internal != nil && clash(public, internal) {
		l.fail(internal.key+".port", "the internal listener's address %s clashes with the public listener's %s: give them different ports",
			net.JoinHostPort(internal.host, strconv.FormatInt(internal.port, 10)),
			net.JoinHostPort(public.host, strconv.FormatInt(public.port, 10)))
	}
	var both []*boundListener
	for _, b := range []*boundListener{public, internal} {
		if b != nil {
			both = append(both, b)
		}
	}
	l.limit(both, "max_message_size", "MaxDataBytes", func(t listenerTable) *int64 { return t.MaxMessageSize },
		func(v int64) { l.cfg.MaxDataBytes = int(v) })
	l.limit(both, "max_frame_size", "MaxFrameBytes", func(t listenerTable) *int64 { return t.MaxFrameSize },
		func(v int64) { l.cfg.MaxFrameBytes = v })
	l.limit(both, "max_connections", "MaxConnections", func(t listenerTable) *int64 { return t.MaxConnections },
		func(v int64) { l.cfg.MaxConnections = int(v) })
}

// clash reports whether two listeners would bind the same port: the same
// host, or one of them on every interface.
func clash(a, b *boundListener) bool {
	if a.port != b.port {
		return false
	}
	return a.host == b.host || unspecified(a.host) || unspecified(b.host)
}

func unspecified(host string) bool {
	ip, err := netip.ParseAddr(host)
	return host == "" || err == nil && ip.IsUnspecified()
}

// limit sets a limit TSLM has once for both listeners from the listeners
// that give it: the largest value, so that nothing either listener was
// meant to accept is refused; a difference is worth a warning.
func (l *loader) limit(ls []*boundListener, name, field string, get func(listenerTable) *int64, apply func(int64)) {
	var best int64
	var bestKey string
	for _, b := range ls {
		key := b.key + "." + name
		v, ok := l.positive(key, get(b.t))
		if !ok {
			continue
		}
		if bestKey != "" && v != best {
			l.warnf(key, "differs from %s (%d): TSLM has one %s for both listeners and takes the larger, %d", bestKey, best, name, max(v, best))
		}
		if v > best {
			best, bestKey = v, key
		}
	}
	if bestKey != "" {
		apply(best)
		l.set(field, bestKey)
	}
}

// listener maps one listener table onto the Config.
func (l *loader) listener(b *boundListener, public bool) {
	t, key := b.t, b.key
	if t.AuthTokens != nil {
		l.fail(key+".auth_tokens", "not supported yet: the original TSLM's tokens sent as the WebSocket subprotocol are not checked by TSLM; "+
			"give each client an API key instead ([[auth.api_key]], sent as \"Authorization: Bearer <key>\") and set auth = \"required\" on this listener")
	}

	addrField := "InternalAddrs"
	if public {
		addrField = "PublicAddrs"
	}
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
	if t.IP != nil || t.Port != nil {
		addr := []string{net.JoinHostPort(b.host, strconv.FormatInt(b.port, 10))}
		if public {
			l.cfg.PublicAddrs = addr
		} else {
			l.cfg.InternalAddrs = addr
		}
		l.set(addrField, key)
	}

	if t.DefaultEndpointPermissions != nil {
		pkey := key + ".default_endpoint_permissions"
		set, ok := l.ops(pkey, *t.DefaultEndpointPermissions)
		switch {
		case !ok:
		case set == 0:
			l.fail(pkey, "names no operation: a listener without any would be useless; name at least one, such as [\"subscribe\"]")
		case public:
			l.cfg.PublicAllow = strings.Split(set.String(), ",")
			l.set("PublicAllow", pkey)
		case set != auth.AllOps:
			l.warnf(pkey, "the internal listener allows every operation (%s), not only %s: restrict it with auth = \"required\" and grants (see docs/config.md)", auth.AllOps, set)
		}
	}

	if t.RateLimitPerSecond != nil {
		rkey := key + ".rate_limit_per_second"
		if v := *t.RateLimitPerSecond; l.number(rkey, v) {
			if v == 0 {
				v = gateway.Unlimited // as with the variables, 0 says unlimited
			}
			if public {
				l.cfg.PublicRate = v
				l.set("PublicRate", rkey)
			} else {
				l.cfg.InternalRate = v
				l.set("InternalRate", rkey)
			}
		}
	}

	if t.Auth != nil {
		akey := key + ".auth"
		if _, err := auth.ParseMode(*t.Auth); err != nil || *t.Auth == "" {
			l.fail(akey, "unknown auth mode %q: want \"off\", \"optional\" or \"required\"", *t.Auth)
		} else if public {
			l.cfg.PublicAuth = *t.Auth
			l.set("PublicAuth", akey)
		} else {
			l.cfg.InternalAuth = *t.Auth
			l.set("InternalAuth", akey)
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
		} else if public {
			l.cfg.PublicTLSCert, l.cfg.PublicTLSKey = cert, tlsKey
			l.set("PublicTLSCert", key+".tls_cert")
			l.set("PublicTLSKey", key+".tls_key")
		} else {
			l.cfg.InternalTLSCert, l.cfg.InternalTLSKey = cert, tlsKey
			l.set("InternalTLSCert", key+".tls_cert")
			l.set("InternalTLSKey", key+".tls_key")
		}
	}

	if t.MaxConnectionsPerIP != nil {
		ckey := key + ".max_connections_per_ip"
		if !public {
			l.fail(ckey, "the internal listener has no per-address limit: its clients are your own apps; set it on listener.public")
		} else if v, ok := l.positive(ckey, t.MaxConnectionsPerIP); ok {
			l.cfg.MaxConnectionsPerIP = int(v)
			l.set("MaxConnectionsPerIP", ckey)
		}
	}
}
