package redistest

import (
	"errors"
	"os"
	"sync"
	"syscall"
)

// Hang freezes the server (SIGSTOP) until the returned function, also run
// at cleanup, thaws it (SIGCONT): connections stay open and commands are
// taken by the kernel but never answered, as with a Redis stuck in a slow
// command or behind a network partition. CLIENT PAUSE cannot stand in for
// it: a paused Redis postpones CLIENT UNPAUSE too. Needs the redis-server
// backend; the test is skipped otherwise.
func (s *Server) Hang() (thaw func()) {
	s.t.Helper()
	s.needRestart()
	if s.cmd == nil {
		s.t.Fatal("redistest: Hang on a stopped server")
	}
	proc := s.cmd.Process
	if err := proc.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("redistest: SIGSTOP: %v", err)
	}
	s.frozen.Store(true)
	var once sync.Once
	thaw = func() {
		once.Do(func() {
			s.frozen.Store(false)
			// A process killed meanwhile needs no thaw.
			if err := proc.Signal(syscall.SIGCONT); err != nil && !errors.Is(err, os.ErrProcessDone) {
				s.t.Errorf("redistest: SIGCONT: %v", err)
			}
		})
	}
	// Registered after Start's cleanup, so it runs first: a stopped
	// process would not heed the SIGTERM that stops it.
	s.t.Cleanup(thaw)
	return thaw
}
