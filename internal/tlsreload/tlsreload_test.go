package tlsreload

import (
	"crypto/tls"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tslm/tslm/internal/syncbuf"
	"github.com/tslm/tslm/internal/tlsreload/tlstest"
)

// clock is a time source tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type logBuffer = syncbuf.Buffer

// start writes pair's files and returns a Reloader over them with a clock
// the test moves.
func start(t *testing.T, pair tlstest.Pair) (r *Reloader, certFile, keyFile string, clk *clock, logs *logBuffer) {
	t.Helper()
	certFile, keyFile = tlstest.Write(t, t.TempDir(), pair)
	logs = &logBuffer{}
	r, err := New(certFile, keyFile, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clk = &clock{t: time.Now()}
	r.now, r.checked = clk.now, clk.now()
	return r, certFile, keyFile, clk, logs
}

func serving(t *testing.T, r *Reloader) string {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.Subject.CommonName
}

func TestReloadsWhenFilesChange(t *testing.T) {
	one, two := tlstest.New(t, "one"), tlstest.New(t, "two")
	r, certFile, keyFile, clk, logs := start(t, one)
	if got := serving(t, r); got != "one" {
		t.Fatalf("serving %q, want one", got)
	}
	tlstest.Replace(t, certFile, two.CertPEM)
	tlstest.Replace(t, keyFile, two.KeyPEM)
	// Looked at most once per second.
	clk.advance(checkInterval - time.Millisecond)
	if got := serving(t, r); got != "one" {
		t.Fatalf("serving %q before the check interval passed, want one", got)
	}
	clk.advance(time.Millisecond)
	if got := serving(t, r); got != "two" {
		t.Fatalf("serving %q after the files changed, want two", got)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") || !strings.Contains(logs.String(), "CN=two") {
		t.Errorf("reload not logged: %s", logs.String())
	}
}

func TestBadFilesKeepTheLastGoodPair(t *testing.T) {
	one, two, three := tlstest.New(t, "one"), tlstest.New(t, "two"), tlstest.New(t, "three")
	r, certFile, keyFile, clk, logs := start(t, one)
	steps := []struct {
		name   string
		change func()
		want   string
		logged string // "" when nothing new is logged
	}{
		{"garbage certificate", func() { tlstest.Replace(t, certFile, []byte("not PEM")) }, "one", "not reloaded"},
		{"unchanged garbage is not logged again", func() {}, "one", ""},
		{"certificate without its key", func() { tlstest.Replace(t, certFile, two.CertPEM) }, "one", "private key does not match"},
		{"key written after its certificate", func() { tlstest.Replace(t, keyFile, two.KeyPEM) }, "two", "reloaded"},
		{"key file removed", func() { os.Remove(keyFile) }, "two", "no such file"},
		{"truncated key", func() { tlstest.Replace(t, keyFile, two.KeyPEM[:40]) }, "two", "not reloaded"},
		{"a good pair again", func() {
			tlstest.Replace(t, certFile, three.CertPEM)
			tlstest.Replace(t, keyFile, three.KeyPEM)
		}, "three", "reloaded"},
	}
	for _, s := range steps {
		before := len(logs.String())
		s.change()
		clk.advance(checkInterval)
		if got := serving(t, r); got != s.want {
			t.Fatalf("%s: serving %q, want %q", s.name, got, s.want)
		}
		logged := logs.String()[before:]
		if s.logged == "" && logged != "" {
			t.Errorf("%s: logged %q, want nothing", s.name, logged)
		}
		if !strings.Contains(logged, s.logged) {
			t.Errorf("%s: logged %q, want it to say %q", s.name, logged, s.logged)
		}
	}
}

func TestFirstLoadMustSucceed(t *testing.T) {
	dir := t.TempDir()
	good := tlstest.New(t, "good")
	certFile, keyFile := tlstest.Write(t, dir, good)
	garbage := filepath.Join(dir, "garbage.pem")
	tlstest.Replace(t, garbage, []byte("-----BEGIN CERTIFICATE-----\nnope\n"))
	missing := filepath.Join(dir, "missing.pem")
	for _, tt := range []struct{ cert, key, named string }{
		{missing, keyFile, missing},
		{certFile, missing, missing},
		{garbage, keyFile, garbage},
		{certFile, garbage, garbage},
	} {
		_, err := New(tt.cert, tt.key, nil)
		if err == nil || !strings.Contains(err.Error(), tt.named) {
			t.Errorf("New(%s, %s) = %v, want an error naming %s", tt.cert, tt.key, err, tt.named)
		}
	}
}

// TestTLSWebSocket: a real TLS listener serving a WebSocket; after the
// files are replaced a new connection gets the new certificate, with no
// restart, while the one already open carries on; a broken file changes
// nothing.
func TestTLSWebSocket(t *testing.T) {
	one, two := tlstest.New(t, "one"), tlstest.New(t, "two")
	r, certFile, keyFile, clk, _ := start(t, one)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echo := websocket.Upgrader{}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, err := echo.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			kind, msg, err := c.ReadMessage()
			if err != nil || c.WriteMessage(kind, msg) != nil {
				return
			}
		}
	})}
	go srv.Serve(tls.NewListener(ln, r.TLSConfig()))
	t.Cleanup(func() { srv.Close() })
	url := "wss://" + ln.Addr().String() + "/"

	dial := func(cfg *tls.Config) (*websocket.Conn, error) {
		d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 10 * time.Second}
		c, _, err := d.Dial(url, nil)
		return c, err
	}
	// dialSees connects, proves the connection works, and returns the
	// common name of the certificate it was served.
	dialSees := func() (string, *websocket.Conn) {
		t.Helper()
		c, err := dial(&tls.Config{RootCAs: tlstest.Pool(one, two), NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		roundTrip(t, c)
		st := c.NetConn().(*tls.Conn).ConnectionState()
		if st.NegotiatedProtocol != "http/1.1" {
			t.Errorf("negotiated %q, want http/1.1", st.NegotiatedProtocol)
		}
		return st.PeerCertificates[0].Subject.CommonName, c
	}

	first, open := dialSees()
	if first != "one" {
		t.Fatalf("first connection served %q, want one", first)
	}
	tlstest.Replace(t, certFile, two.CertPEM)
	tlstest.Replace(t, keyFile, two.KeyPEM)
	clk.advance(checkInterval)
	if got, _ := dialSees(); got != "two" {
		t.Fatalf("after replacing the files a new connection got %q, want two", got)
	}
	roundTrip(t, open) // the old connection is untouched

	tlstest.Replace(t, certFile, []byte("broken"))
	clk.advance(checkInterval)
	if got, _ := dialSees(); got != "two" {
		t.Fatalf("after breaking the file a new connection got %q, want two", got)
	}

	// TLS 1.1 and older are refused.
	c, err := dial(&tls.Config{RootCAs: tlstest.Pool(two), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatal("a TLS 1.1 client connected")
	}
	if !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("a TLS 1.1 client failed with %v, want the server's protocol version alert", err)
	}
}

func roundTrip(t *testing.T, c *websocket.Conn) {
	t.Helper()
	c.NetConn().SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "ping" {
		t.Fatalf("echo = %q, %v", msg, err)
	}
}
