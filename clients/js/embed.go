// Package jsclient holds the browser client (src/tslm.js, src/tslm.d.ts)
// and the demo page built on it (demo/), embedded so that a gateway started
// with TSLM_DEMO=true serves them from its public listener with nothing
// else to deploy. It imports nothing of the gateway.
package jsclient

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"net/http"
	"strings"
	"time"
)

//go:embed src/tslm.js src/tslm.d.ts demo/index.html demo/demo.js
var files embed.FS

// Paths maps each URL path served to its embedded file.
var paths = map[string]string{
	"/":          "demo/index.html",
	"/demo.js":   "demo/demo.js",
	"/tslm.js":   "src/tslm.js",
	"/tslm.d.ts": "src/tslm.d.ts",
}

// Patterns are the http.ServeMux patterns Register adds: the demo page at
// "/" (exactly), its script, and the client module with its types.
var Patterns = []string{"GET /{$}", "GET /demo.js", "GET /tslm.js", "GET /tslm.d.ts"}

// The demo page loads only its own scripts and talks only to its own
// origin: nothing injected into a message it shows can fetch or run more.
const contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// Register serves the demo page and the client module on mux.
func Register(mux *http.ServeMux) {
	h := Handler()
	for _, p := range Patterns {
		mux.Handle(p, h)
	}
}

// Handler serves the files at the paths Register names, and 404 elsewhere.
func Handler() http.Handler {
	type file struct {
		body        []byte
		etag, ctype string
	}
	served := make(map[string]file, len(paths))
	for path, name := range paths {
		body, err := files.ReadFile(name)
		if err != nil {
			panic("jsclient: " + name + " is not embedded: " + err.Error()) // a build mistake, caught by the tests
		}
		sum := sha256.Sum256(body)
		ctype := "text/javascript; charset=utf-8"
		switch {
		case strings.HasSuffix(name, ".html"):
			ctype = "text/html; charset=utf-8"
		case strings.HasSuffix(name, ".d.ts"):
			ctype = "application/typescript; charset=utf-8"
		}
		served[path] = file{body: body, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`, ctype: ctype}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := served[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("X-Content-Type-Options", "nosniff")
		// Revalidated on every load (a 304 costs a round trip): a gateway
		// upgrade must not leave browsers on an old client.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		if r.URL.Path == "/" {
			h.Set("Content-Security-Policy", contentSecurityPolicy)
			h.Set("Referrer-Policy", "no-referrer")
		}
		// ServeContent answers If-None-Match (304) and HEAD from the ETag.
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}
