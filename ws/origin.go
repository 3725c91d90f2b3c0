package ws

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
)

// originForm is what an allowed origin looks like, for error messages.
const originForm = "want scheme://host[:port] with scheme http or https, such as https://example.com or http://localhost:3000, or * for any origin"

// origins decides which browser origins may connect.
type origins struct {
	any     bool
	allowed map[string]struct{} // canonical scheme://host:port
}

// ParseOrigins checks a list of allowed origins as Config.AllowedOrigins
// takes it, returning an error that shows the expected form for the first
// entry that is not one. Spaces around entries and empty entries are
// ignored, so that "https://a, https://b" works. A browser's Origin header
// is scheme://host[:port] exactly, so a bare host, a path, a query, user
// information, or a wildcard other than a lone "*" could never match one.
func ParseOrigins(list []string) error {
	for _, o := range list {
		if o = strings.TrimSpace(o); o == "" || o == "*" {
			continue
		}
		if _, err := canonicalOrigin(o); err != nil {
			return err
		}
	}
	return nil
}

// newOrigins keeps the valid entries of list; the others are logged and
// skipped, since no browser could send them.
func newOrigins(list []string, logger *slog.Logger) origins {
	o := origins{allowed: make(map[string]struct{})}
	for _, e := range list {
		switch e = strings.TrimSpace(e); e {
		case "":
		case "*":
			o.any = true
		default:
			c, err := canonicalOrigin(e)
			if err != nil {
				logger.Error("ignoring an allowed origin", "err", err)
				continue
			}
			o.allowed[c] = struct{}{}
		}
	}
	return o
}

// allow reports whether a request with this Origin header, made to host
// (the request's Host), may be upgraded. No Origin means no browser, and
// the origin check only protects browsers' users.
//
// The server's own origin is allowed by host and port only: TLS is usually
// terminated by a proxy in front of the gateway, so the gateway cannot know
// whether the page was loaded over http or https. X-Forwarded-Proto would
// tell, but trusting it means knowing which proxy set it, and a page on
// the same host and port is the same site either way.
func (o origins) allow(origin, host string) bool {
	if origin == "" || o.any {
		return true
	}
	c, err := canonicalOrigin(origin)
	if err != nil {
		return false // "null" (a sandboxed page or a file), or garbage
	}
	if _, ok := o.allowed[c]; ok {
		return true
	}
	scheme, _, _ := strings.Cut(c, "://")
	own, ok := canonicalHost(scheme, host)
	return ok && own == c
}

// canonicalOrigin returns origin as scheme://host:port, lower-case, with
// the scheme's default port made explicit, so that https://A.com and
// https://a.com:443 are one origin.
func canonicalOrigin(origin string) (string, error) {
	invalid := func(why string) error {
		return fmt.Errorf("invalid origin %q (%s): %s", origin, why, originForm)
	}
	u, err := url.Parse(origin)
	if err != nil {
		return "", invalid("not a URL")
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return "", invalid("no http or https scheme")
	case u.Opaque != "" || u.Host == "":
		return "", invalid("no host")
	case u.User != nil:
		return "", invalid("user information")
	case u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(origin, "#"):
		return "", invalid("a path, query or fragment")
	}
	c, ok := canonicalHost(scheme, u.Host)
	if !ok {
		return "", invalid("bad host or port")
	}
	return c, nil
}

// canonicalHost returns scheme://host:port for host[:port], or false when
// hostport is not one.
func canonicalHost(scheme, hostport string) (string, bool) {
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1] // an IPv6 literal without a port
	}
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[scheme]
	}
	if host == "" || strings.ContainsAny(host, "*/\\@ []") || !validPort(port) {
		return "", false
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(host), port), true
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for _, r := range p {
		if r < '0' || r > '9' {
			return false
		}
		n = n*10 + int(r-'0')
	}
	return n >= 1 && n <= 65535
}
