// Command tslmcat is a minimal WebSocket client for trying TSLM from a
// terminal: every line of standard input is sent as one text frame, and
// every frame received is printed as one line. The end of input does not
// end the session, so that a piped subscribe goes on printing messages;
// Ctrl-C (or -linger) closes it. It exits when the server closes the
// connection, printing the close code and reason.
//
//	echo '{"type":"subscribe","channel":"prices"}' | go run ./cmd/tslmcat ws://localhost:8080/v1/ws
//
// With TSLM_CREDENTIAL set, it connects with "Authorization: Bearer" and
// that credential (an access token, a publisher token or an API key). An
// environment variable rather than a flag, so that it does not show in the
// process list.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	proto := flag.String("protocol", "tslm.v1", "subprotocol to ask for (tslm.v1 or tslm.legacy)")
	linger := flag.Duration("linger", 0, "after the end of input, wait this long for answers, then close (0: stay until Ctrl-C)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tslmcat [-protocol tslm.v1] [-linger 1s] ws://host:port/v1/ws")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	dialer := websocket.Dialer{Subprotocols: []string{*proto}, HandshakeTimeout: 10 * time.Second}
	var header http.Header
	if cred := os.Getenv("TSLM_CREDENTIAL"); cred != "" {
		header = http.Header{"Authorization": {"Bearer " + cred}}
	}
	conn, resp, err := dialer.Dial(flag.Arg(0), header)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslmcat:", err)
		if resp != nil {
			// The refusal's body says why (a 401's reason, the setting a
			// 429 or 503 points to).
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			fmt.Fprintf(os.Stderr, "%s: %s", resp.Status, body)
		}
		os.Exit(1)
	}
	defer conn.Close()

	// Only this goroutine writes data frames; closing uses WriteControl,
	// which gorilla allows concurrently.
	closeNormally := func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		// The reader exits when the server answers; don't wait forever.
		time.AfterFunc(2*time.Second, func() { os.Exit(0) })
	}
	go func() {
		in := bufio.NewScanner(os.Stdin)
		in.Buffer(make([]byte, 64<<10), 16<<20)
		for in.Scan() {
			if len(in.Bytes()) == 0 {
				continue
			}
			if err := conn.WriteMessage(websocket.TextMessage, in.Bytes()); err != nil {
				return
			}
		}
		if *linger > 0 {
			time.Sleep(*linger)
			closeNormally()
		}
	}()
	interrupt := make(chan os.Signal, 1)
	signal.Notify(interrupt, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-interrupt
		closeNormally()
	}()

	for {
		_, frame, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				fmt.Fprintf(os.Stderr, "closed: %d %s\n", ce.Code, ce.Text)
				if ce.Code == websocket.CloseNormalClosure {
					return
				}
			} else {
				fmt.Fprintln(os.Stderr, "tslmcat:", err)
			}
			os.Exit(1)
		}
		os.Stdout.Write(append(frame, '\n'))
	}
}
