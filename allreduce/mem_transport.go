package allreduce

import (
	"fmt"
	"slices"
	"sync"
)

// MemTransport is an in-process Transport: every rank of a ring shares one
// MemTransport. Each listener has an unbounded queue drained by its own
// goroutine, so Send never blocks (as a NATS publish does not wait for the
// subscriber) and a ring of senders cannot deadlock. An inbox may have
// several listeners; each gets its own copy of every message, the sender
// included if it listens (as NATS does without NoEcho).
type MemTransport struct {
	maxMessage int

	mu      sync.Mutex
	inboxes map[string][]*memInbox
}

// NewMemTransport returns an empty in-memory network whose messages may be
// up to maxMessage bytes.
func NewMemTransport(maxMessage int) *MemTransport {
	return &MemTransport{maxMessage: maxMessage, inboxes: map[string][]*memInbox{}}
}

type memInbox struct {
	mu      sync.Mutex
	wake    *sync.Cond
	queue   [][]byte
	stopped bool
	exited  chan struct{}
}

// MaxMessage implements Transport.
func (t *MemTransport) MaxMessage() int { return t.maxMessage }

// Send implements Transport. Messages to an inbox nobody listens on are
// dropped, as on NATS.
func (t *MemTransport) Send(inbox string, msg []byte) error {
	if len(msg) > t.maxMessage {
		return fmt.Errorf("send to %s: message of %d bytes exceeds %d", inbox, len(msg), t.maxMessage)
	}
	t.mu.Lock()
	// Listen and stop replace the slice rather than modify it, so this
	// snapshot stays valid outside the lock.
	ins := t.inboxes[inbox]
	t.mu.Unlock()
	for _, in := range ins {
		cp := append([]byte(nil), msg...)
		in.mu.Lock()
		if !in.stopped {
			in.queue = append(in.queue, cp)
			in.wake.Signal()
		}
		in.mu.Unlock()
	}
	return nil
}

// Listen implements Transport.
func (t *MemTransport) Listen(inbox string, handle func([]byte)) (func() error, error) {
	in := &memInbox{exited: make(chan struct{})}
	in.wake = sync.NewCond(&in.mu)
	t.mu.Lock()
	t.inboxes[inbox] = append(slices.Clip(t.inboxes[inbox]), in)
	t.mu.Unlock()

	go in.deliver(handle)

	var once sync.Once
	stop := func() error {
		once.Do(func() {
			t.mu.Lock()
			rest := slices.DeleteFunc(slices.Clone(t.inboxes[inbox]), func(x *memInbox) bool { return x == in })
			if len(rest) == 0 {
				delete(t.inboxes, inbox)
			} else {
				t.inboxes[inbox] = rest
			}
			t.mu.Unlock()
			in.mu.Lock()
			in.stopped = true
			in.queue = nil
			in.wake.Signal()
			in.mu.Unlock()
			<-in.exited
		})
		return nil
	}
	return stop, nil
}

func (in *memInbox) deliver(handle func([]byte)) {
	defer close(in.exited)
	for {
		in.mu.Lock()
		for len(in.queue) == 0 && !in.stopped {
			in.wake.Wait()
		}
		if in.stopped {
			in.mu.Unlock()
			return
		}
		msg := in.queue[0]
		in.queue[0] = nil
		in.queue = in.queue[1:]
		in.mu.Unlock()
		handle(msg)
	}
}
