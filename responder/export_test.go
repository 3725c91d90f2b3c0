package responder

import (
	"testing"
	"time"
)

// SetFunctionRetry sets, until t ends, how long the replies of the
// ServeRedis calls started meanwhile append plainly after tslm_publish was
// found missing: a test cannot wait the default's 30 s.
func SetFunctionRetry(t testing.TB, d time.Duration) {
	old := functionRetry
	functionRetry = d
	t.Cleanup(func() { functionRetry = old })
}
