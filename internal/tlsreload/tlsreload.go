// Package tlsreload serves a TLS certificate from PEM files that may be
// replaced while the process runs (certbot, cert-manager, a mounted
// secret): the files are checked on handshakes, at most once per second,
// and read again when either one's modification time or size changed. A
// pair that cannot be read or does not match leaves the last good one in
// service, and is logged; only the first load must succeed. A Reloader is
// safe for concurrent use.
package tlsreload

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// checkInterval bounds how often handshakes look at the files: a stat of
// two files per second costs nothing, and a renewed certificate is rarely
// urgent to the second.
const checkInterval = time.Second

// Reloader holds the certificate and key read from two files.
type Reloader struct {
	certFile, keyFile string
	logger            *slog.Logger
	now               func() time.Time // tests move it

	mu      sync.Mutex
	cert    *tls.Certificate
	seen    stamp     // the files as last read, well or badly
	checked time.Time // when they were last looked at
	lastErr string    // the last failure logged, so that it is logged once
}

// stamp tells whether a file changed.
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// New reads certFile (a PEM certificate chain, leaf first) and keyFile (its
// PEM private key). Failure is an error naming the file at fault. A nil
// logger means slog.Default().
func New(certFile, keyFile string, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, logger: logger, now: time.Now}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.seen, r.checked = cert, st, r.now()
	return r, nil
}

// TLSConfig returns a server configuration that serves r's certificate:
// TLS 1.2 at least, and HTTP/1.1 only, as WebSocket upgrades need it.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: r.GetCertificate,
	}
}

// GetCertificate returns the current certificate, first reading the files
// again if they changed and the last look is a second old. It never fails
// once New succeeded: a bad read keeps the last good pair.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= checkInterval {
		r.checked = now
		r.refresh()
	}
	return r.cert, nil
}

// refresh expects r.mu held.
func (r *Reloader) refresh() {
	st, err := r.stat()
	if err == nil && st == r.seen {
		return
	}
	if err == nil {
		// Remembered even if the read fails: a bad pair is not read again
		// every second, only once it changes (a key written after its
		// certificate, say).
		r.seen = st
		var cert *tls.Certificate
		if cert, err = r.load(); err == nil {
			r.cert, r.lastErr = cert, ""
			r.logger.Info("TLS certificate reloaded", "cert", r.certFile, "subject", cert.Leaf.Subject.String(),
				"not_after", cert.Leaf.NotAfter)
			return
		}
	}
	if msg := err.Error(); msg != r.lastErr {
		r.lastErr = msg
		r.logger.Error("TLS certificate not reloaded: still serving the previous one", "err", err)
	}
}

func (r *Reloader) stat() (stamp, error) {
	c, err := os.Stat(r.certFile)
	if err != nil {
		return stamp{}, fmt.Errorf("TLS certificate: %w", err)
	}
	k, err := os.Stat(r.keyFile)
	if err != nil {
		return stamp{}, fmt.Errorf("TLS key: %w", err)
	}
	return stamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

func (r *Reloader) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", r.certFile, r.keyFile, err)
	}
	return &cert, nil
}
