// Package clientip tells a request's client address when the gateway sits
// behind proxies that name the client in X-Forwarded-For or Forwarded
// (RFC 7239) headers.
//
// Those headers are believed only as far as a chain of trusted proxies
// vouches for them: the peer (RemoteAddr) must be trusted for its headers
// to count at all, and the hops they list are walked from the right (the
// nearest proxy's entry) to the left, skipping trusted ones; the first
// untrusted hop is the client. Anything further left was written by that
// client, so it is never read. A Resolver is immutable and safe for
// concurrent use.
package clientip

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Resolver knows the trusted proxies. The nil *Resolver trusts nobody.
type Resolver struct {
	trusted []netip.Prefix
}

// Parse returns a Resolver trusting entries, each an IP address ("10.0.0.1",
// "::1") or a CIDR prefix ("10.0.0.0/8"). An invalid entry is an error
// naming it.
func Parse(entries []string) (*Resolver, error) {
	r := &Resolver{}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if p, err := netip.ParsePrefix(e); err == nil {
			if p.Addr().Zone() != "" {
				return nil, fmt.Errorf("trusted proxy %q: an address with a zone cannot be matched", e)
			}
			r.trusted = append(r.trusted, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("trusted proxy %q is neither an IP address nor a CIDR prefix (such as 10.0.0.1 or 10.0.0.0/8)", e)
		}
		a = a.Unmap()
		r.trusted = append(r.trusted, netip.PrefixFrom(a, a.BitLen()))
	}
	return r, nil
}

// Trusted reports whether a is one of the trusted proxies.
func (r *Resolver) Trusted(a netip.Addr) bool {
	if r == nil || !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the address of the client that made req:
//
//   - the peer's address (RemoteAddr) unless the peer is a trusted proxy;
//   - otherwise, from the Forwarded header when there is one, else from
//     X-Forwarded-For, the rightmost hop that is not a trusted proxy; when
//     every hop is trusted, the leftmost;
//   - a Forwarded hop whose for= is not an address (an obfuscated
//     identifier such as "_hidden", "unknown", or none) ends the walk: who
//     is behind it is unknown, so the nearest address known, a trusted one,
//     stands for the client rather than anything it may have forged;
//   - a malformed header (an entry that is not an address, broken
//     quoting) gives the peer's address.
//
// The result is unmapped (::ffff:1.2.3.4 is 1.2.3.4) and has no zone; it
// is the zero Addr only when RemoteAddr is not an address.
func (r *Resolver) ClientIP(req *http.Request) netip.Addr {
	peer := RemoteAddr(req)
	if !r.Trusted(peer) {
		return peer
	}
	var hops []netip.Addr
	var ok bool
	if fwd := req.Header.Values("Forwarded"); len(fwd) > 0 {
		hops, ok = parseForwarded(strings.Join(fwd, ","))
	} else if xff := req.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops, ok = parseXFF(strings.Join(xff, ","))
	} else {
		return peer
	}
	if !ok {
		return peer
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		if !h.IsValid() {
			break // an unknown hop: see above
		}
		client = h
		if !r.Trusted(h) {
			break
		}
	}
	return client
}

// RemoteAddr returns the address of req's peer, or the zero Addr when
// RemoteAddr holds none.
func RemoteAddr(req *http.Request) netip.Addr {
	host := req.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// parseXFF reads "client, proxy1, proxy2". Some proxies write a port
// ("1.2.3.4:5678", "[::1]:80") or brackets; both are accepted. Any entry
// that is not an address makes the whole header malformed.
func parseXFF(v string) ([]netip.Addr, bool) {
	parts := strings.Split(v, ",")
	hops := make([]netip.Addr, 0, len(parts))
	for _, p := range parts {
		a, ok := parseHost(strings.TrimSpace(p))
		if !ok {
			return nil, false
		}
		hops = append(hops, a)
	}
	return hops, true
}

// parseHost parses "1.2.3.4", "1.2.3.4:80", "::1", "[::1]" or "[::1]:80".
func parseHost(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return checked(ap.Addr())
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return checked(a)
}

// checked refuses zoned addresses: a zone names an interface of whoever
// wrote the header, meaningless here.
func checked(a netip.Addr) (netip.Addr, bool) {
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// parseForwarded reads RFC 7239 elements, "for=1.2.3.4;proto=https,
// for=\"[2001:db8::1]:4711\"", returning one hop per element: the for=
// address, or the zero Addr when the element names none (no for=,
// "unknown", an obfuscated "_identifier").
func parseForwarded(v string) ([]netip.Addr, bool) {
	var hops []netip.Addr
	p := forwardedParser{s: v}
	for {
		hop, ok := p.element()
		if !ok {
			return nil, false
		}
		hops = append(hops, hop)
		p.space()
		if p.done() {
			return hops, true
		}
		if !p.eat(',') {
			return nil, false
		}
	}
}

type forwardedParser struct {
	s string
	i int
}

func (p *forwardedParser) done() bool { return p.i >= len(p.s) }

func (p *forwardedParser) space() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *forwardedParser) eat(c byte) bool {
	if !p.done() && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// element parses pairs separated by ";" up to a "," or the end.
func (p *forwardedParser) element() (netip.Addr, bool) {
	var hop netip.Addr
	seenFor := false
	for {
		p.space()
		if p.done() || p.s[p.i] == ',' {
			return hop, true
		}
		if p.eat(';') {
			continue // empty pairs are allowed by the grammar
		}
		name := p.token()
		if name == "" || !p.eat('=') {
			return netip.Addr{}, false
		}
		value, ok := p.value()
		if !ok {
			return netip.Addr{}, false
		}
		if strings.EqualFold(name, "for") {
			if seenFor {
				return netip.Addr{}, false // at most once per element
			}
			seenFor = true
			if hop, ok = parseNode(value); !ok {
				return netip.Addr{}, false
			}
		}
		p.space()
		if !p.done() && p.s[p.i] != ',' && !p.eat(';') {
			return netip.Addr{}, false
		}
	}
}

// token reads RFC 7230 tchars.
func (p *forwardedParser) token() string {
	start := p.i
	for !p.done() && isTchar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

func (p *forwardedParser) value() (string, bool) {
	if !p.eat('"') {
		t := p.token()
		return t, t != ""
	}
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch c {
		case '"':
			return b.String(), true
		case '\\':
			if p.done() {
				return "", false
			}
			b.WriteByte(p.s[p.i])
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", false // unterminated
}

func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseNode reads a for= node: "1.2.3.4", "1.2.3.4:80", "[::1]",
// "[::1]:80", or an identifier that is no address ("unknown",
// "_hidden", with or without an obfuscated port), which gives the zero
// Addr. An IPv6 address must be bracketed.
func parseNode(v string) (netip.Addr, bool) {
	host, port := v, ""
	if strings.HasPrefix(v, "[") {
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		host, port = v[1:end], v[end+1:]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || !validPort(port) {
			return netip.Addr{}, false
		}
		return checked(a)
	}
	if i := strings.IndexByte(v, ':'); i >= 0 {
		host, port = v[:i], v[i:]
	}
	if !validPort(port) {
		return netip.Addr{}, false
	}
	if strings.EqualFold(host, "unknown") || isObfuscated(host) {
		return netip.Addr{}, true
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Is4() {
		return netip.Addr{}, false
	}
	return a, true
}

// validPort accepts "", ":" then 1-5 digits, or ":" then an obfuscated
// port ("_" then letters, digits, ".", "_", "-").
func validPort(p string) bool {
	if p == "" {
		return true
	}
	p, ok := strings.CutPrefix(p, ":")
	if !ok || p == "" {
		return false
	}
	if isObfuscated(p) {
		return true
	}
	if len(p) > 5 {
		return false
	}
	for i := range len(p) {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// isObfuscated reports whether s is an RFC 7239 obfuscated identifier.
func isObfuscated(s string) bool {
	if len(s) < 2 || s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
