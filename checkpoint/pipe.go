package checkpoint

import (
	"io"
	"sync/atomic"
	"unsafe"
)

// blockAlign is the alignment direct I/O needs for file offsets, lengths
// and memory; 4096 covers the block sizes of common disks and file systems.
const blockAlign = 4096

// Sizes of the write pipeline: pipeDepth buffers of pipeBufSize each, so
// up to pipeDepth-1 full buffers wait for or are in a write while the next
// one is filled.
const (
	pipeBufSize = 8 << 20
	pipeDepth   = 4
)

// flushEvery is how often, in bytes, the pipeline's writer goroutine
// flushes what it wrote to stable storage. Flushing as it goes lets the
// disk work while the producer still copies and hashes, instead of all at
// the final fsync; the final fsync then only covers the tail.
const flushEvery = 64 << 20

// alignedBytes allocates n bytes (a multiple of blockAlign) starting at a
// blockAlign boundary, as direct I/O requires.
func alignedBytes(n int) []byte {
	b := make([]byte, n+blockAlign)
	off := (blockAlign - int(uintptr(unsafe.Pointer(&b[0]))%blockAlign)) % blockAlign
	return b[off : off+n : off+n]
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

// bufferPool keeps pipeline buffers between writes, so that a worker that
// checkpoints repeatedly does not allocate them every time.
type bufferPool struct {
	size int // bytes per buffer, a multiple of blockAlign
	free chan []byte
}

func newBufferPool(capacity, size int) *bufferPool {
	return &bufferPool{size: size, free: make(chan []byte, capacity)}
}

func (p *bufferPool) get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return alignedBytes(p.size)
	}
}

func (p *bufferPool) put(b []byte) {
	select {
	case p.free <- b[:cap(b)]:
	default: // pool full: let the GC have it
	}
}

// pipeWriter copies a byte stream into aligned buffers and writes each full
// buffer from a second goroutine. The producer's copy and checksum of one
// buffer thus overlap the write of the previous ones, and with direct I/O
// the kernel does no copy at all: the CPU cost of a checkpoint is one
// memcpy and one sha256 pass.
type pipeWriter struct {
	free   chan []byte // empty buffers; the pipe owns exactly pipeDepth
	full   chan []byte // buffers to write, in order
	done   chan error  // the writer goroutine's first error, once
	failed atomic.Bool // set as soon as a write fails, to stop the producer
	cur    []byte      // the buffer being filled
	pool   *bufferPool
}

// newPipeWriter starts a pipeline writing to w with buffers from pool.
// flush, if not nil, is called from the writer goroutine after every
// flushEvery bytes (production code passes the flushEvery constant).
func newPipeWriter(w io.Writer, flush func() error, flushEvery int, pool *bufferPool) *pipeWriter {
	p := &pipeWriter{
		free: make(chan []byte, pipeDepth),
		full: make(chan []byte, pipeDepth),
		done: make(chan error, 1),
		pool: pool,
	}
	for range pipeDepth - 1 {
		p.free <- pool.get()[:0]
	}
	p.cur = pool.get()[:0]
	go p.drain(w, flush, flushEvery)
	return p
}

func (p *pipeWriter) drain(w io.Writer, flush func() error, flushEvery int) {
	var err error
	var unflushed int
	for b := range p.full {
		if err == nil {
			_, err = w.Write(b)
			unflushed += len(b)
			if err == nil && flush != nil && unflushed >= flushEvery {
				err, unflushed = flush(), 0
			}
			if err != nil {
				p.failed.Store(true)
			}
		}
		p.free <- b[:0]
	}
	p.done <- err
}

// errPipeFailed stops the producer; the real error comes from close.
var errPipeFailed = io.ErrClosedPipe

// Write copies b into the pipeline.
func (p *pipeWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		if p.failed.Load() {
			return n - len(b), errPipeFailed
		}
		if len(p.cur) == cap(p.cur) {
			p.full <- p.cur
			p.cur = <-p.free
		}
		c := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur = p.cur[:len(p.cur)+c]
		b = b[c:]
	}
	return n, nil
}

// close writes what is left, zero-padded to blockAlign when pad is set (as
// direct I/O needs; the caller truncates the file afterwards), waits for
// the writes and returns the buffers to the pool. It must be called exactly
// once, also after an error, and reports the first write error.
func (p *pipeWriter) close(pad bool) error {
	if len(p.cur) > 0 {
		if pad {
			n := len(p.cur)
			p.cur = p.cur[:roundUp(n, blockAlign)]
			clear(p.cur[n:])
		}
		p.full <- p.cur
	} else {
		p.free <- p.cur
	}
	p.cur = nil
	close(p.full)
	err := <-p.done
	for range pipeDepth {
		p.pool.put(<-p.free)
	}
	return err
}
