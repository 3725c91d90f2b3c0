package backlog

// SetAfterXRead installs a hook that runs in every Read between the XREAD
// wake-up and the proving read, so tests can change the stream in between.
// Call it before any Read.
func SetAfterXRead(r *Redis, f func()) { r.afterXRead = f }
