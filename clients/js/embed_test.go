package jsclient

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestHandlerServesTheEmbeddedFiles checks each path against the file in
// the repository, with a type a browser runs as a module (a module script
// served as anything but JavaScript is refused under nosniff).
func TestHandlerServesTheEmbeddedFiles(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for path, file := range paths {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || string(body) != string(want) {
			t.Errorf("GET %s: %d, %d bytes; want 200 and %s (%d bytes)", path, resp.StatusCode, len(body), file, len(want))
		}
		ct := resp.Header.Get("Content-Type")
		switch {
		case strings.HasSuffix(file, ".js") && !strings.HasPrefix(ct, "text/javascript"),
			strings.HasSuffix(file, ".html") && !strings.HasPrefix(ct, "text/html"):
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
		if path == "/" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "connect-src 'self'") {
			t.Errorf("GET /: Content-Security-Policy %q", resp.Header.Get("Content-Security-Policy"))
		}

		// A browser that has the file revalidates it for nothing.
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
		resp2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp.Header.Get("ETag") == "" || resp2.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag %q: %d, want 304", path, resp.Header.Get("ETag"), resp2.StatusCode)
		}
	}
	for _, path := range []string{"/index.html", "/src/tslm.js", "/demo/demo.js", "/nope"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
}

// TestDemoImportsTheServedModule keeps the page and the paths in step: the
// page loads /demo.js, which imports /tslm.js.
func TestDemoImportsTheServedModule(t *testing.T) {
	page, _ := files.ReadFile("demo/index.html")
	script, _ := files.ReadFile("demo/demo.js")
	if !strings.Contains(string(page), `src="/demo.js"`) {
		t.Error(`demo/index.html does not load /demo.js`)
	}
	if !strings.Contains(string(script), `from "/tslm.js"`) {
		t.Error(`demo/demo.js does not import /tslm.js`)
	}
}
