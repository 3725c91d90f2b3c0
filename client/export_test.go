package client

// Sentinels exposes the sentinel list to the tests of package client_test.
func Sentinels() []error { return sentinels() }

// AwaitedRequests is how many acknowledged requests await their answer.
func AwaitedRequests(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.requests)
}
