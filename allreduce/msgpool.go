package allreduce

import "sync"

// msgPool keeps message buffers a Ring is done with, so that a
// transport's receive path reuses them instead of allocating one per
// message. Every allocation of a chunk-sized message is otherwise
// garbage a few microseconds later, and at hundreds of MB/s the
// collector, the scavenger and the kernel's page clearing cost more CPU
// than the copy itself (docs/allreduce.md).
//
// Buffers are kept in one size class, the largest message seen: a
// ring's data messages are all one chunk long except the last of each
// segment. Messages below msgPoolMin bytes (heartbeats, scalars) are
// allocated as before.
type msgPool struct {
	mu       sync.Mutex
	class    int // capacity of every buffer in free
	free     [][]byte
	maxBytes int // bound on len(free)*class
}

const (
	msgPoolMin      = 4 << 10
	msgPoolMaxBytes = 32 << 20
)

// copyOf returns a buffer holding a copy of data, reusing a free one when
// it can. The copy is the only write: a fresh buffer is not zeroed first.
func (p *msgPool) copyOf(data []byte) []byte {
	if len(data) < msgPoolMin {
		return append([]byte(nil), data...)
	}
	p.mu.Lock()
	if len(data) > p.class {
		p.class, p.free = len(data), p.free[:0]
	}
	class := p.class
	var b []byte
	if n := len(p.free); n > 0 {
		b, p.free = p.free[n-1], p.free[:n-1]
	}
	p.mu.Unlock()
	if b == nil {
		b = append(make([]byte, 0, class), data...)
		return b
	}
	return append(b[:0], data...)
}

// put takes back a buffer from copyOf (or any buffer of the class). The
// caller must not use msg afterwards.
func (p *msgPool) put(msg []byte) {
	if cap(msg) < msgPoolMin {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	limit := p.maxBytes
	if limit <= 0 {
		limit = msgPoolMaxBytes
	}
	if cap(msg) != p.class || (len(p.free)+1)*p.class > limit {
		return
	}
	p.free = append(p.free, msg[:0])
}
