package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/tslm/tslm/client"
)

// The README's "Clients" snippet: subscribe, print messages, report loss.
func Example() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "ws://127.0.0.1:8080/v1/ws", client.WithBearer("token"))
	if err != nil {
		log.Fatal(err) // *client.HandshakeError for an HTTP refusal
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, "prices", client.SubscribeOptions{Last: 10})
	if errors.Is(err, client.ErrNotFound) {
		log.Fatal("create the channel first")
	} else if err != nil {
		log.Fatal(err)
	}
	for ev := range sub.Events() {
		switch ev := ev.(type) {
		case client.Message:
			fmt.Println(ev.ID, string(ev.Data))
		case client.NotResumed, client.Gap:
			log.Printf("messages may have been lost: %+v", ev)
		case client.Deleted:
			log.Print("channel deleted")
		}
	}
	if err := sub.Err(); err != nil {
		log.Fatal(err)
	}
}

func ExampleClient_Request() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "ws://127.0.0.1:8081/v1/ws")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reply, err := c.Request(ctx, "orders", map[string]int{"item": 42})
	var refusal *client.Refusal
	switch {
	case errors.As(err, &refusal):
		log.Printf("the app refused: %s", refusal.Code)
	case errors.Is(err, client.ErrTimeout):
		log.Print("no reply in time")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(string(reply))
	}
}
