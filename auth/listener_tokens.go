package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
)

// Secret is a string that must never be shown: it prints, formats and
// logs as "[redacted]", so that a configuration dumped with %+v or
// handed to slog by mistake shows no listener token. Compare it with
// ListenerTokens, never with ==.
type Secret string

const redacted = "[redacted]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// MaxListenerTokenBytes bounds a listener token: it travels in a header
// (Sec-WebSocket-Protocol), which proxies cap at a few kilobytes.
const MaxListenerTokenBytes = 256

// CheckListenerToken reports why token cannot be a listener token, or nil.
// A token is what the original TSLM's clients send as their WebSocket
// subprotocol, so it must be a valid one: an HTTP token (RFC 9110, section
// 5.6.2), at most MaxListenerTokenBytes long. The error never quotes the
// token.
func CheckListenerToken(token Secret) error {
	switch {
	case token == "":
		return errors.New("is empty")
	case len(token) > MaxListenerTokenBytes:
		return fmt.Errorf("is %d bytes long, more than %d", len(token), MaxListenerTokenBytes)
	}
	for i := range len(token) {
		if !isTokenChar(token[i]) {
			return fmt.Errorf("has a character a WebSocket subprotocol may not hold at byte %d: use letters, digits and !#$%%&'*+-.^_`|~ only", i)
		}
	}
	return nil
}

// isTokenChar reports whether c is a tchar of RFC 9110.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// ListenerTokens are the tokens a listener admits clients by: the original
// TSLM's auth_tokens. It holds only their SHA-256 hashes, and compares in
// constant time, so that neither a memory dump nor the time an answer
// takes tells a token. A nil *ListenerTokens admits everyone. It is safe
// for concurrent use.
type ListenerTokens struct {
	sums [][sha256.Size]byte
}

// NewListenerTokens returns the set of tokens, or nil when there are none.
// Check each with CheckListenerToken first: an invalid one could never be
// presented as a subprotocol, but is kept, and matched, all the same.
func NewListenerTokens(tokens []Secret) *ListenerTokens {
	if len(tokens) == 0 {
		return nil
	}
	t := &ListenerTokens{sums: make([][sha256.Size]byte, len(tokens))}
	for i, tok := range tokens {
		t.sums[i] = sha256.Sum256([]byte(tok))
	}
	return t
}

// Match reports whether presented is one of the tokens. Hashing first makes
// every comparison the same length, and every token is compared, so that
// the time taken tells neither a token's length nor which one matched.
func (t *ListenerTokens) Match(presented string) bool {
	if t == nil {
		return false
	}
	sum := sha256.Sum256([]byte(presented))
	found := 0
	for i := range t.sums {
		found |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	return found == 1
}

// ListenerTokenHeader is the header in which a client that can set one
// may present a listener token; on the HTTP API it is the only way.
const ListenerTokenHeader = "TSLM-Auth-Token"

// ListenerTokenChallenge is the WWW-Authenticate of a 401 refusing a
// request for want of a listener token (RFC 9110 has every 401 carry a
// challenge).
const ListenerTokenChallenge = "TSLM-Auth-Token"
