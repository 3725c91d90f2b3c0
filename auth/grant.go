// Package auth decides who may do what: it verifies publisher credentials
// (JSON Web Tokens signed by a configured key, or API keys listed by their
// SHA-256 hash) and answers whether a principal may perform an operation on
// a channel. It knows nothing of listeners or frames: the transports ask it.
//
// A publisher token is a JWT whose header names its key by kid, signed with
// EdDSA by an Ed25519 key or with HS256 by an HMAC secret, carrying sub (the
// principal's name in logs), exp (required), optionally nbf, iss and aud
// (required when the verifier is configured with them), and the grants:
//
//	"tslm": {"create": ["orders.*"], "publish": ["orders.*", "audit"], "serve": ["billing.rpc"]}
//
// Each list holds channel patterns (see Pattern); an absent list grants
// nothing, and any other key in tslm refuses the token.
//
// Subscribers sign in with an OpenID provider (OIDCVerifier): its access
// tokens are verified offline against the keys it publishes (JWKS), found
// through its discovery document, fetched again every Refresh and when a
// token names an unknown kid (after a key rotation) — at most once per
// UnknownKIDInterval, so made-up kids cannot make the gateway hammer the
// provider. A provider down at start is retried in the background; its
// tokens are refused meanwhile, as unavailable rather than invalid.
// Accepted: RS256, RS384, RS512, PS256, ES256, ES384 and EdDSA with a kid,
// never none or HMAC; exp required, nbf honoured, iss exactly the
// issuer, aud containing the audience when one is configured. The grants
// claim (default "tslm") is a list of patterns, which may be subscribed to
// and requested, or an object of lists by operation:
//
//	"tslm": ["prices.*", "news"]
//	"tslm": {"subscribe": ["prices.*"], "request": ["quotes"], "publish": ["chat.*"]}
//
// An unknown operation or an invalid pattern refuses the token; no claim
// grants nothing (the subject is still authenticated).
//
// Authenticator routes any credential to the verifier it belongs to and
// remembers the ones it accepted for a minute.
package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Op is an operation a principal may be granted on a channel. The zero Op is
// no operation, so that a forgotten field grants nothing.
type Op uint8

const (
	OpSubscribe Op = iota + 1
	OpPublish
	OpCreate
	OpRequest
	OpServe
	opEnd
)

var opNames = [...]string{
	OpSubscribe: "subscribe",
	OpPublish:   "publish",
	OpCreate:    "create",
	OpRequest:   "request",
	OpServe:     "serve",
}

// String returns the name ParseOp reads.
func (o Op) String() string {
	if o > 0 && o < opEnd {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// ParseOp reads an operation's name as String writes it.
func ParseOp(s string) (Op, error) {
	for o := OpSubscribe; o < opEnd; o++ {
		if opNames[o] == s {
			return o, nil
		}
	}
	return 0, fmt.Errorf("unknown operation %q: want subscribe, publish, create, request or serve", s)
}

// OpSet is a set of operations.
type OpSet uint8

// Ops returns the set of ops.
func Ops(ops ...Op) OpSet {
	var s OpSet
	for _, o := range ops {
		if o > 0 && o < opEnd {
			s |= 1 << o
		}
	}
	return s
}

// Has reports whether op is in the set.
func (s OpSet) Has(op Op) bool { return op > 0 && op < opEnd && s&(1<<op) != 0 }

const allOps = OpSet((1<<opEnd - 1) &^ 1)

// MaxPatternLen is the longest pattern, the longest channel name too.
const MaxPatternLen = 128

// ReservedPrefix starts the names of session inboxes, which the broker
// (broker.InboxPrefix) keeps for replies to requests. No pattern matches
// them, not even "*": a grant can never reach another session's replies.
const ReservedPrefix = "_inbox."

// Pattern matches channel names: it is made of channel-name characters
// (A-Z a-z 0-9 . _ : -), and '*' stands for any run of them, possibly empty.
// A pattern without '*' is an exact name. The zero Pattern matches nothing.
type Pattern struct{ s string }

var errPatternChars = errors.New("channel patterns are 1-128 bytes of A-Z a-z 0-9 . _ : - and *")

// ParsePattern compiles s. Its errors do not quote s, since patterns also
// come from tokens, whose content is not echoed to clients; callers that
// read s from their own configuration may quote it.
func ParsePattern(s string) (Pattern, error) {
	switch {
	case s == "":
		return Pattern{}, fmt.Errorf("empty pattern: %w", errPatternChars)
	case len(s) > MaxPatternLen:
		return Pattern{}, fmt.Errorf("pattern of %d bytes: %w", len(s), errPatternChars)
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '*' && !nameByte(s[i]) {
			return Pattern{}, fmt.Errorf("invalid byte at offset %d of pattern: %w", i, errPatternChars)
		}
	}
	return Pattern{s: s}, nil
}

// MustParsePattern is ParsePattern for patterns known to be valid; it panics
// on an invalid one.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the pattern's source.
func (p Pattern) String() string { return p.s }

// IsZero reports whether p is the zero Pattern, which matches nothing.
func (p Pattern) IsZero() bool { return p.s == "" }

// Match reports whether name is a valid channel name that p matches. Names
// that are not valid channel names (empty, over 128 bytes, other bytes) and
// reserved inbox names match no pattern.
func (p Pattern) Match(name string) bool {
	if p.s == "" || !validName(name) || strings.HasPrefix(name, ReservedPrefix) {
		return false
	}
	ok, _ := wildMatch(p.s, name)
	return ok
}

// wildMatch is the greedy two-pointer wildcard match: on a mismatch it
// retries only from the last '*' seen, one byte further into name, since
// with '*' as the only wildcard an earlier '*' never needs to absorb more.
// That bounds the work by len(pattern)·len(name) — linear in the name, as
// patterns are at most 128 bytes — where the naive recursion is exponential
// in the number of stars. It also returns the number of steps taken, which
// the tests hold to that bound.
func wildMatch(pattern, name string) (bool, int) {
	pi, ni := 0, 0
	star, mark := -1, 0
	steps := 0
	for ni < len(name) {
		steps++
		switch {
		case pi < len(pattern) && pattern[pi] == '*':
			star, mark = pi, ni
			pi++
		case pi < len(pattern) && pattern[pi] == name[ni]:
			pi++
			ni++
		case star >= 0:
			mark++
			pi, ni = star+1, mark
		default:
			return false, steps
		}
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern), steps
}

func nameByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '.', c == '_', c == ':', c == '-':
		return true
	}
	return false
}

// validName is backlog.ValidChannel, repeated so that auth stands alone.
func validName(name string) bool {
	if name == "" || len(name) > MaxPatternLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return false
		}
	}
	return true
}

// Grant allows its operations on the channels any of its patterns match.
type Grant struct {
	Ops      OpSet
	Patterns []Pattern
}

// Principal is an authenticated party and what it may do.
type Principal struct {
	// Subject names the principal in logs: a token's sub, an API key's
	// configured name.
	Subject string
	// Issuer is who vouches for Subject: an OpenID provider's issuer URL,
	// or one of IssuerAPIKey and IssuerPublisherToken. Subjects are unique
	// per issuer only.
	Issuer string
	Grants []Grant
	// Expires is when the principal's credential stops being valid; the
	// zero time is never.
	Expires time.Time
}

// Allows reports whether p may perform op on channel at now. A nil or
// expired principal may do nothing, and no principal may touch a reserved
// inbox name or an invalid channel name.
func (p *Principal) Allows(op Op, channel string, now time.Time) bool {
	if p == nil || p.Expired(now) {
		return false
	}
	for _, g := range p.Grants {
		if !g.Ops.Has(op) {
			continue
		}
		for _, pat := range g.Patterns {
			if pat.Match(channel) {
				return true
			}
		}
	}
	return false
}

// Issuers of the principals the gateway vouches for itself.
const (
	IssuerAPIKey         = "tslm:api-key"
	IssuerPublisherToken = "tslm:publisher-token"
)

// Owner identifies the principal across connections and replicas, for
// binding what it leaves behind (a request session) to it: "" for nil (no
// credentials), else issuer and subject, which no other principal shares.
func (p *Principal) Owner() string {
	if p == nil {
		return ""
	}
	return p.Issuer + "\x00" + p.Subject
}

// Expired reports whether p's credential has expired at now.
func (p *Principal) Expired(now time.Time) bool {
	return !p.Expires.IsZero() && !now.Before(p.Expires)
}

// clone copies p deeply, so that a caller cannot change the configuration
// through the principal Verify returned.
func (p Principal) clone() *Principal {
	c := p
	c.Grants = make([]Grant, len(p.Grants))
	for i, g := range p.Grants {
		c.Grants[i] = Grant{Ops: g.Ops, Patterns: append([]Pattern(nil), g.Patterns...)}
	}
	return &c
}

// validate checks a principal from configuration.
func (p Principal) validate() error {
	if p.Subject == "" {
		return errors.New("a principal needs a subject, which names it in logs")
	}
	for i, g := range p.Grants {
		if g.Ops == 0 || g.Ops&^allOps != 0 {
			return fmt.Errorf("grant %d: no operations or unknown ones", i)
		}
		if len(g.Patterns) == 0 {
			return fmt.Errorf("grant %d: no patterns", i)
		}
		for j, pat := range g.Patterns {
			if _, err := ParsePattern(pat.s); err != nil {
				return fmt.Errorf("grant %d, pattern %d: %w", i, j, err)
			}
		}
	}
	return nil
}
