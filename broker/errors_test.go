package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tslm/tslm/backlog"
)

// TestErrorCodes maps every sentinel, its refinements, and every error the
// backlog may return (as the Hub converts it) to the code and client
// message transports send.
func TestErrorCodes(t *testing.T) {
	const secret = "dial tcp 10.1.2.3:6379: i/o timeout"
	live := context.Background()
	canceled, cancel := context.WithCancel(live)
	cancel()
	tests := []struct {
		name     string
		err      error
		code     Code
		msg      string // "" when not checked
		sentinel *Error // errors.Is(ErrorOf(err), sentinel) must hold
	}{
		{"bad request", ErrBadRequest, CodeBadRequest, "bad request", ErrBadRequest},
		{"unknown type", ErrUnknownType, CodeUnknownType, "", ErrUnknownType},
		{"forbidden", ErrForbidden, CodeForbidden, "", ErrForbidden},
		{"not found", ErrNotFound, CodeNotFound, "channel not found", ErrNotFound},
		{"too large", ErrTooLarge, CodeTooLarge, "", ErrTooLarge},
		{"rate limited", ErrRateLimited, CodeRateLimited, "", ErrRateLimited},
		{"limit", ErrLimit, CodeLimitExceeded, "limit exceeded", ErrLimit},
		{"unavailable", ErrUnavailable, CodeUnavailable, "", ErrUnavailable},
		{"internal", ErrInternal, CodeInternal, "internal error", ErrInternal},
		{"canceled", ErrCanceled, CodeCanceled, "", ErrCanceled},
		{"bad channel", ErrBadChannel, CodeBadRequest, "", ErrBadRequest},
		{"bad config", ErrBadConfig.With("max_len must be at least 1"), CodeBadRequest, "max_len must be at least 1", ErrBadConfig},
		{"timeout", ErrTimeout, CodeUnavailable, "", ErrUnavailable},
		{"closed", ErrClosed, CodeUnavailable, "", ErrUnavailable},
		{"unsubscribed", ErrUnsubscribed, CodeCanceled, "", ErrCanceled},
		{"refined", ErrLimit.With("last may be at most %d", 5), CodeLimitExceeded, "last may be at most 5", ErrLimit},
		{"wrapped", ErrUnavailable.Wrap(errors.New(secret)), CodeUnavailable, "the backlog is unavailable; retry later", ErrUnavailable},
		{"refined then wrapped", ErrBadChannel.Wrap(errors.New(secret)), CodeBadRequest, "", ErrBadChannel},
		{"wrapped by fmt", fmt.Errorf("subscribe: %w", ErrNotFound), CodeNotFound, "channel not found", ErrNotFound},
		{"any other error", errors.New(secret), CodeInternal, "internal error", ErrInternal},

		{"backlog not found", fromBacklog(live, "c", backlog.ErrNotFound), CodeNotFound, `channel "c" not found`, ErrNotFound},
		{"backlog unavailable", fromBacklog(live, "c", fmt.Errorf("%w: %s", backlog.ErrUnavailable, secret)), CodeUnavailable, "the backlog is unavailable; retry later", ErrUnavailable},
		{"backlog limit", fromBacklog(live, "c", backlog.ErrLimit), CodeLimitExceeded, "", ErrLimit},
		{"backlog closed", fromBacklog(live, "c", backlog.ErrClosed), CodeUnavailable, "", ErrClosed},
		{"backlog deadline", fromBacklog(live, "c", context.DeadlineExceeded), CodeUnavailable, "the backlog did not answer in time; retry later", ErrTimeout},
		{"backlog unavailable on deadline", fromBacklog(live, "c", fmt.Errorf("%w: %w", backlog.ErrUnavailable, context.DeadlineExceeded)), CodeUnavailable, "", ErrTimeout},
		{"backlog canceled", fromBacklog(live, "c", context.Canceled), CodeCanceled, "", ErrCanceled},
		{"caller canceled, backlog unavailable", fromBacklog(canceled, "c", backlog.ErrUnavailable), CodeCanceled, "", ErrCanceled},
		{"backlog other", fromBacklog(live, "c", errors.New(secret)), CodeInternal, "internal error", ErrInternal},
		{"hub error passes", fromBacklog(live, "c", ErrBadChannel), CodeBadRequest, "", ErrBadChannel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ErrorOf(tt.err)
			if e.Code != tt.code {
				t.Errorf("code %q, want %q", e.Code, tt.code)
			}
			if tt.msg != "" && e.Message != tt.msg {
				t.Errorf("message %q, want %q", e.Message, tt.msg)
			}
			if strings.Contains(e.Message, "10.1.2.3") {
				t.Errorf("message %q leaks the cause", e.Message)
			}
			if !errors.Is(e, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", e, tt.sentinel)
			}
		})
	}
	if ErrorOf(nil) != nil {
		t.Error("ErrorOf(nil) is not nil")
	}
	// The cause stays reachable for logs and errors.Is, and distinct
	// sentinels stay distinct.
	err := fromBacklog(live, "c", fmt.Errorf("%w: %s", backlog.ErrUnavailable, secret))
	if !errors.Is(err, backlog.ErrUnavailable) || !strings.Contains(err.Error(), secret) {
		t.Errorf("%v: cause lost", err)
	}
	if errors.Is(ErrTimeout, ErrClosed) || errors.Is(ErrBadChannel, ErrBadConfig) || errors.Is(ErrCanceled, ErrUnavailable) {
		t.Error("distinct sentinels match each other")
	}
}

// TestAvailabilityLogsOncePerOutage: many failures log one WARN, the first
// success after them one INFO; cancellations and a shutdown log nothing.
func TestAvailabilityLogsOncePerOutage(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	a := &availability{logger: slog.New(slog.NewTextHandler(&buf, nil)), now: func() time.Time { return now }}
	down := ErrUnavailable.Wrap(errors.New("dial tcp: refused"))
	steps := []error{nil, ErrCanceled, ErrClosed, down, ErrTimeout, down, ErrCanceled, ErrUnsubscribed, nil, nil, ErrNotFound, down, ErrNotFound}
	for _, err := range steps {
		now = now.Add(time.Second)
		a.observe(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"level=WARN", "level=INFO", "level=WARN", "level=INFO"}
	if len(lines) != len(want) {
		t.Fatalf("got %d log lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d %q, want %s", i, lines[i], w)
		}
	}
	if !strings.Contains(lines[0], "refused") || !strings.Contains(lines[1], "down_for=5s") {
		t.Errorf("lines lack the cause or the duration:\n%s", buf.String())
	}
}
