package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
)

// healthcheck is "tslm healthcheck [-ready] [-timeout 2s]": it reads the
// configuration the gateway reads (TSLM_CONFIG, then TSLM_* variables) and
// asks the gateway's own internal listener for /healthz, or /readyz with
// -ready. It exits 0 on 200 and 1 otherwise, with the reason on stderr.
//
// It exists because the distroless image has no shell, curl or wget: the
// image's HEALTHCHECK runs the binary itself, in the container whose
// environment the gateway has.
func healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tslm healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ready := fs.Bool("ready", false, "ask /readyz (can it serve: its backlog answers, it is not draining) instead of /healthz (is it running)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tslm healthcheck [-ready] [-timeout 2s]")
		fmt.Fprintln(stderr, "Asks the gateway configured by TSLM_CONFIG and TSLM_* variables, on its internal listener; exits 0 when healthy, 1 otherwise.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		// Exit status 2 is reserved by Docker's HEALTHCHECK: 1 is "unhealthy".
		return 1
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tslm healthcheck: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 1
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "tslm healthcheck: -timeout must be positive, not %v\n", *timeout)
		return 1
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "tslm healthcheck:", err)
		return 1
	}

	st, _, err := load()
	if err != nil {
		return fail(fmt.Errorf("configuration: %w", err))
	}
	cfg := st.Gateway.WithDefaults()
	first := firstAddr(cfg.InternalAddrs)
	t, err := selfTarget(first, cfg.InternalTLSCert != "")
	if err != nil {
		return fail(fmt.Errorf("TSLM_INTERNAL_ADDRS entry %q: %w", first, err))
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	tlsCfg, err := t.tlsConfig(cfg.InternalTLSCert)
	if err != nil {
		return fail(err)
	}
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			// A self-check never goes through HTTP_PROXY.
			Proxy:             nil,
			TLSClientConfig:   tlsCfg,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	url := t.base + path
	resp, err := client.Get(url)
	if err != nil {
		return fail(explainDialError(url, err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	answer := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fail(fmt.Errorf("GET %s: %s: %s", url, resp.Status, answer))
	}
	fmt.Fprintf(stdout, "GET %s: %s\n", url, answer)
	return 0
}

func firstAddr(addrs []string) string {
	for _, a := range addrs {
		if a = strings.TrimSpace(a); a != "" {
			return a
		}
	}
	return ""
}

// target is where a replica reaches its own internal listener.
type target struct {
	base     string // scheme://host:port
	host     string
	loopback bool
}

// selfTarget turns a listen address into one to dial: a listener on every
// interface (":8081", "0.0.0.0:8081", "[::]:8081") is reached on loopback.
func selfTarget(addr string, withTLS bool) (target, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return target{}, err
	}
	if port == "0" || port == "" {
		return target{}, errors.New("the port is chosen at start, so no health check can find it: give a fixed port")
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if err == nil && ip.Is6() {
			host = "::1"
		}
	}
	ip, err := netip.ParseAddr(host)
	t := target{host: host, loopback: strings.EqualFold(host, "localhost") || (err == nil && ip.IsLoopback())}
	scheme := "http"
	if withTLS {
		scheme = "https"
	}
	t.base = scheme + "://" + net.JoinHostPort(host, port)
	return t, nil
}

// tlsConfig is the client side of a self-check over TLS. On loopback the
// peer is this very replica, and its certificate names the host clients
// use, not 127.0.0.1: it is not verified. On any other address it is,
// against the system's roots and the replica's own certificate file.
func (t target) tlsConfig(certFile string) (*tls.Config, error) {
	if !strings.HasPrefix(t.base, "https://") {
		return nil, nil
	}
	if t.loopback {
		return &tls.Config{InsecureSkipVerify: true}, nil
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("TSLM_INTERNAL_TLS_CERT: %w", err)
	}
	roots.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: roots, ServerName: t.host}, nil
}

// explainDialError adds the likely cause to a failed request.
func explainDialError(url string, err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("GET %s: nothing listens there (is the gateway running, with the same TSLM_INTERNAL_ADDRS?): %w", url, err)
	case errors.Is(err, os.ErrDeadlineExceeded), isTimeout(err):
		return fmt.Errorf("GET %s: no answer in time: %w", url, err)
	}
	return fmt.Errorf("GET %s: %w", url, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
