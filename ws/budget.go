package ws

// SendBudget bounds the bytes queued for the clients of every Server that
// shares it. It is safe for concurrent use.
type SendBudget struct {
	limit int64
}

// NewSendBudget returns a budget of limit bytes.
func NewSendBudget(limit int64) *SendBudget { return &SendBudget{limit: limit} }
