// Command tslmcat is a minimal WebSocket client for trying TSLM from a
// terminal: every line of standard input is sent as one text frame, and
// every frame received is printed as one line. It exits when the server
// closes the connection, printing the close code and reason.
//
//	go run ./cmd/tslmcat ws://localhost:8080/v1/ws
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/gorilla/websocket"
)

func main() {
	proto := flag.String("protocol", "tslm.v1", "subprotocol to ask for (tslm.v1 or tslm.legacy)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: tslmcat [-protocol tslm.v1] ws://host:port/v1/ws")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	dialer := websocket.Dialer{Subprotocols: []string{*proto}}
	conn, _, err := dialer.Dial(flag.Arg(0), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslmcat:", err)
		os.Exit(1)
	}
	defer conn.Close()

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
		// End of input: close politely, then keep printing until the
		// server answers.
		conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	}()

	out := bufio.NewWriter(os.Stdout)
	for {
		_, frame, err := conn.ReadMessage()
		if err != nil {
			out.Flush()
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
		out.Write(frame)
		out.WriteByte('\n')
		// Flush when nothing more is buffered by the connection, so
		// bursts print in one write and single messages right away.
		out.Flush()
	}
}
