package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestAnswerPingsPatiently(t *testing.T) {
	// A server pings with a payload; the tool's connection answers with
	// the same payload, and keeps reading.
	pongs := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
		ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(5*time.Second))
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		ws.ReadMessage() // runs the pong handler; ends when the client closes
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var answered string
	ws.SetPingHandler(func(string) error { answered = "gorilla's"; return nil })
	answerPingsPatiently(ws)
	go func() {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		ws.ReadMessage()
	}()
	select {
	case got := <-pongs:
		if got != "are you there" || answered != "" {
			t.Errorf("pong %q (other handler: %q), want the ping's payload from answerPingsPatiently", got, answered)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong")
	}
}
