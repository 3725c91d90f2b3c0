// Package bearer reads and answers bearer credentials on HTTP requests
// (RFC 6750), the same way for the WebSocket upgrade and the HTTP API.
package bearer

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tslm/tslm/auth"
)

// FromRequest reads r's Authorization header: present is false without
// one; ok is false unless it is exactly one "Bearer <credential>" (the
// scheme in any case), with no white space inside the credential.
func FromRequest(r *http.Request) (credential string, present, ok bool) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", false, false
	}
	if len(values) > 1 {
		return "", true, false
	}
	scheme, cred, found := strings.Cut(values[0], " ")
	cred = strings.TrimSpace(cred)
	if !found || !strings.EqualFold(scheme, "Bearer") || cred == "" || strings.ContainsAny(cred, " \t") {
		return "", true, false
	}
	return cred, true, true
}

// Malformed is the refusal of a header FromRequest found not ok.
const Malformed = `the Authorization header must be "Bearer <credential>"`

// Challenge is the WWW-Authenticate value of a 401 (RFC 6750, section 3):
// bare when no credential was presented (refused is ""), else
// invalid_token with refused as its description, reduced to what a
// quoted-string may hold.
func Challenge(refused string) string {
	if refused == "" {
		return "Bearer"
	}
	clean := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return ' '
		}
		return r
	}, refused)
	return fmt.Sprintf(`Bearer error="invalid_token", error_description="%s"`, clean)
}

// Refusal words an authenticator's error for the client. checked is false
// when the credential was not refused but could not be checked (a bug, a
// provider out of reach): the caller logs err, which the client does not
// see.
func Refusal(err error) (msg string, checked bool) {
	if errors.Is(err, auth.ErrUnauthenticated) {
		return "credentials refused: " + strings.TrimPrefix(err.Error(), "unauthenticated: "), true
	}
	return "credentials refused: they could not be checked; retry later", false
}
