package client

import (
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// Backoff is the wait between reconnection attempts: Min, doubling per
// failed attempt up to Max, each wait shortened by a random fraction of
// at most Jitter (0 to 1) of itself, so that clients dropped together do
// not come back together.
type Backoff struct {
	Min, Max time.Duration
	Jitter   float64
}

// DefaultBackoff is the Backoff of a client without WithBackoff.
var DefaultBackoff = Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.5}

// delay returns the wait before attempt n (0 is the first retry).
func (b Backoff) delay(n int) time.Duration {
	d := b.Min
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		d -= time.Duration(rand.Float64() * b.Jitter * float64(d))
	}
	return d
}

// Option configures Dial.
type Option func(*options)

type options struct {
	header  http.Header
	logger  *slog.Logger
	backoff Backoff
	dialer  *websocket.Dialer
}

// WithBearer presents credential (an access token, a publisher token or an
// API key) as "Authorization: Bearer" on every connection.
func WithBearer(credential string) Option {
	return func(o *options) { o.header.Set("Authorization", "Bearer "+credential) }
}

// WithHeader adds h to every handshake (for a proxy in front of the
// gateway, for instance).
func WithHeader(h http.Header) Option {
	return func(o *options) {
		for k, vs := range h {
			for _, v := range vs {
				o.header.Add(k, v)
			}
		}
	}
}

// WithLogger logs reconnections and dropped frames to l (default
// slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithBackoff replaces DefaultBackoff.
func WithBackoff(b Backoff) Option { return func(o *options) { o.backoff = b } }

// WithDialer dials with d (TLS settings, proxy, net dialer); its
// Subprotocols are replaced by tslm.v1.
func WithDialer(d *websocket.Dialer) Option { return func(o *options) { o.dialer = d } }
