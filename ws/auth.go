package ws

import (
	"context"

	"github.com/tslm/tslm/auth"
)

// Authenticator turns a credential (a token or an API key, as presented in
// an Authorization: Bearer header or an auth frame) into the principal it
// stands for. Its errors wrap auth.ErrUnauthenticated when the credential
// is refused; their text may be shown to the client.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (*auth.Principal, error)
}
