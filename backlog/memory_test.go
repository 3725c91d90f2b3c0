package backlog_test

import (
	"testing"

	"github.com/tslm/tslm/backlog"
	"github.com/tslm/tslm/backlog/backlogtest"
)

func TestMemoryConformance(t *testing.T) {
	backlogtest.Run(t, func(t *testing.T) backlog.Log {
		return backlog.NewMemory(backlog.MemoryConfig{})
	})
}

func TestMemoryChannelLimit(t *testing.T) {
	m := backlog.NewMemory(backlog.MemoryConfig{MaxChannels: 2})
	defer m.Close()
	ctx := t.Context()
	for _, ch := range []string{"a", "b"} {
		if _, err := m.Create(ctx, ch, backlog.ChannelConfig{}); err != nil {
			t.Fatalf("Create(%s): %v", ch, err)
		}
	}
	if created, err := m.Create(ctx, "a", backlog.ChannelConfig{}); err != nil || created {
		t.Errorf("re-Create at the limit = %v, %v; want false, nil", created, err)
	}
	if _, err := m.Create(ctx, "c", backlog.ChannelConfig{}); err != backlog.ErrLimit {
		t.Errorf("Create past the limit: %v, want ErrLimit", err)
	}
}
