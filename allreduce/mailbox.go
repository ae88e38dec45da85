package allreduce

import "sync"

// mailbox carries received messages from a transport's delivering
// goroutine to the collective's goroutine. put never blocks: a delivering
// goroutine may be the connection's only reader (the NATS transport hands
// messages over from the goroutine that reads the socket), and blocking
// it would stall the socket, the server's writes to it and, through
// them, the peers. What can queue up is bounded by the ring's windows
// (docs/allreduce.md), apart from heartbeats.
type mailbox struct {
	mu    sync.Mutex
	queue [][]byte
	wake  chan struct{} // holds a token while queue may be non-empty
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

func (m *mailbox) put(msg []byte) {
	m.mu.Lock()
	m.queue = append(m.queue, msg)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// swap returns everything queued and keeps empty (length 0) as the new
// queue, so that two slices alternate and neither is reallocated.
func (m *mailbox) swap(empty [][]byte) [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.queue
	m.queue = empty[:0]
	return q
}
