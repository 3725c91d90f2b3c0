package bare

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Config configures a Server; zero fields take the defaults named.
type Config struct {
	// SendQueue is the frames queued for one connection (default 1024,
	// TSLM_SEND_QUEUE's default); a message that does not fit closes the
	// connection with 4000.
	SendQueue int
	// WriteTimeout bounds one frame's write (default 10s).
	WriteTimeout time.Duration
	// MaxDataBytes bounds a published message's data (default 65536,
	// TSLM_MAX_DATA_BYTES's default).
	MaxDataBytes int

	// LoseEvery and RepeatEvery, when above zero, make every n-th
	// delivery go missing, or go out twice: tests only, so that a load
	// generator's verification can be shown to catch a loss or a
	// duplicate. They never apply in a measurement.
	LoseEvery, RepeatEvery int
}

func (c Config) withDefaults() Config {
	if c.SendQueue <= 0 {
		c.SendQueue = 1024
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxDataBytes <= 0 {
		c.MaxDataBytes = 65536
	}
	return c
}

// Server is the broadcaster: an http.Handler for its routes.
type Server struct {
	cfg      Config
	mux      *http.ServeMux
	upgrader websocket.Upgrader

	mu       sync.Mutex
	channels map[string]*channel
	conns    map[*conn]struct{}
	closed   bool
	wg       sync.WaitGroup // the connections' goroutines

	faultMu    sync.Mutex
	deliveries uint64 // counted for LoseEvery and RepeatEvery, under faultMu
}

// New returns a server with no channels.
func New(cfg Config) *Server {
	s := &Server{
		cfg:      cfg.withDefaults(),
		mux:      http.NewServeMux(),
		channels: make(map[string]*channel),
		conns:    make(map[*conn]struct{}),
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"tslm.v1"},
			// A load generator is not a browser: any origin.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	s.mux.HandleFunc("GET /v1/ws", s.serveWS)
	s.mux.HandleFunc("PUT /v1/channels/{channel}", s.createHTTP)
	s.mux.HandleFunc("POST /v1/channels/{channel}/messages", s.publishHTTP)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close closes every connection and waits for their goroutines; later
// upgrades are refused.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(websocket.CloseGoingAway, "server closing")
	}
	s.wg.Wait()
}

// channel is one channel's subscribers and ID sequence.
type channel struct {
	name string
	mu   sync.Mutex
	subs map[*conn]struct{}
	ms   int64 // the last ID's milliseconds
	seq  int64 // and sequence
}

// errNotFound is a command on a channel never created.
var errNotFound = errors.New("channel does not exist")

func (s *Server) channel(name string) *channel {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.channels[name]
}

// create makes channel name; created is false when it existed.
func (s *Server) create(name string) (created bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.channels[name]; ok {
		return false
	}
	s.channels[name] = &channel{name: name, subs: make(map[*conn]struct{})}
	return true
}

// publish assigns data the channel's next ID and queues it to every
// subscriber, all under the channel's lock, so that each subscriber gets
// the channel's messages in ID order.
func (s *Server) publish(name string, data []byte) (string, error) {
	ch := s.channel(name)
	if ch == nil {
		return "", errNotFound
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if now := time.Now().UnixMilli(); now > ch.ms {
		ch.ms, ch.seq = now, 0
	} else {
		ch.seq++
	}
	id := strconv.FormatInt(ch.ms, 10) + "-" + strconv.FormatInt(ch.seq, 10)
	frame := make([]byte, 0, 48+len(name)+len(id)+len(data))
	frame = append(frame, `{"type":"message","channel":"`...)
	frame = append(frame, name...)
	frame = append(frame, `","id":"`...)
	frame = append(frame, id...)
	frame = append(frame, `","data":`...)
	frame = append(frame, data...)
	frame = append(frame, '}')
	for c := range ch.subs {
		s.deliver(c, frame)
	}
	return id, nil
}

// deliver queues a live frame for c, applying the test faults.
func (s *Server) deliver(c *conn, frame []byte) {
	if s.cfg.LoseEvery > 0 || s.cfg.RepeatEvery > 0 {
		s.faultMu.Lock()
		s.deliveries++
		n := s.deliveries
		s.faultMu.Unlock()
		if s.cfg.LoseEvery > 0 && n%uint64(s.cfg.LoseEvery) == 0 {
			return
		}
		if s.cfg.RepeatEvery > 0 && n%uint64(s.cfg.RepeatEvery) == 0 {
			c.offer(frame)
		}
	}
	c.offer(frame)
}

// head is the channel's newest ID, 0-0 when none. ch.mu is held.
func (ch *channel) head() string {
	if ch.ms == 0 {
		return "0-0"
	}
	return strconv.FormatInt(ch.ms, 10) + "-" + strconv.FormatInt(ch.seq, 10)
}

// validName reports whether name is a channel name of docs/protocol.md,
// which also makes it safe to write into JSON unquoted.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == ':' || b == '-') {
			return false
		}
	}
	return true
}

func (s *Server) createHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	if !validName(name) {
		httpError(w, http.StatusBadRequest, "bad_request", "invalid channel name")
		return
	}
	status := http.StatusOK
	created := s.create(name)
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"channel": name, "created": created})
}

func (s *Server) publishHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(s.cfg.MaxDataBytes)+1))
	if err != nil {
		httpError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if len(body) > s.cfg.MaxDataBytes {
		httpError(w, http.StatusRequestEntityTooLarge, "too_large", "data too large")
		return
	}
	if !json.Valid(body) {
		httpError(w, http.StatusBadRequest, "bad_request", "body is not one JSON value")
		return
	}
	id, err := s.publish(r.PathValue("channel"), bytes.TrimSpace(body))
	if err != nil {
		httpError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"code": code, "message": msg})
}
