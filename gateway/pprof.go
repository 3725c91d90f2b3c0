package gateway

import (
	"net/http"
	"net/http/pprof"
)

// registerPprof serves net/http/pprof's profiles under /debug/pprof/ on
// mux, which must be the internal listener's: profiles show the process's
// command line, and a CPU profile or trace costs the replica while it
// runs. Importing net/http/pprof also registers them on
// http.DefaultServeMux, which the gateway never serves.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // the named profiles too: heap, goroutine, ...
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
