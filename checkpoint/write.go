package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Writing one shard file: the header and the three tensors are streamed
// through a pipeline of aligned buffers (pipeWriter, at the end) to the
// disk, with direct I/O where the file system takes it, while a second
// goroutine hashes the data. The file is created and renamed into place
// by writeAtomic (atomic.go); the format is format.go's.

// hashChunk is how much is hashed between cancellation checks.
const hashChunk = 8 << 20

// shardSums are the checksums of a written shard.
type shardSums struct {
	bytes        int64
	headerSHA256 string
	dataSHA256   string
}

// writeShardFile writes meta and st into the empty file f, with direct I/O
// if useDirect and the file system accepts it, else through the page cache.
// st must not change until it returns.
func writeShardFile(ctx context.Context, f *os.File, meta ShardMeta, st State, pool *bufferPool, useDirect bool) (shardSums, error) {
	if !hostLittleEndian() {
		return shardSums{}, errBigEndian
	}
	direct := useDirect && setDirectIO(f, true) == nil
	sums, err := writeShard(ctx, f, meta, st, pool, direct)
	if direct && errors.Is(err, syscall.EINVAL) {
		// The file system took the O_DIRECT flag but refuses the I/O (some
		// FUSE and network file systems do): start over through the page cache.
		if err := rewindForBufferedIO(f); err != nil {
			return shardSums{}, err
		}
		sums, err = writeShard(ctx, f, meta, st, pool, false)
	}
	return sums, err
}

// rewindForBufferedIO turns direct I/O off and empties f for a fresh start.
func rewindForBufferedIO(f *os.File) error {
	if err := setDirectIO(f, false); err != nil {
		return fmt.Errorf("turn off direct I/O: %w", err)
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("truncate for rewrite: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("seek for rewrite: %w", err)
	}
	return nil
}

// writeShard streams meta and st to f in safetensors format.
//
// The header records the sha256 of the data section, which is only known
// after the data. Rather than hashing the data in a pass of its own first,
// the header is written with a placeholder checksum of the same length and
// overwritten at the end. The hash runs in its own goroutine over st while
// this one copies st into the write pipeline: both only read st, so on a
// multi-core host the copy, the hash and the disk all work at once.
func writeShard(ctx context.Context, f *os.File, meta ShardMeta, st State, pool *bufferPool, direct bool) (shardSums, error) {
	placeholder, err := encodeHeader(meta, strings.Repeat("0", sha256.Size*2))
	if err != nil {
		return shardSums{}, err
	}
	hashCtx, stopHash := context.WithCancel(ctx)
	defer stopHash()
	sumc := make(chan string, 1)
	go func() { sumc <- hashFloats(hashCtx, st.tensors()) }()

	pw := newPipeWriter(f, f.Sync, flushEvery, pool)
	_, err = pw.Write(placeholder)
	for i, t := range st.tensors() {
		b := floatBytes(t)
		for off := 0; off < len(b) && err == nil; off += pool.size {
			if err = ctx.Err(); err != nil {
				break
			}
			if _, err = pw.Write(b[off:min(off+pool.size, len(b))]); err != nil {
				err = fmt.Errorf("write tensor %s: %w", tensorNames()[i], err)
			}
		}
	}
	if closeErr := pw.close(direct); closeErr != nil {
		err = fmt.Errorf("write shard data: %w", closeErr) // the real cause of errPipeFailed
	}
	if err != nil {
		stopHash()
		<-sumc
		return shardSums{}, err
	}
	dataSHA := <-sumc
	if err := ctx.Err(); err != nil { // the hash may have stopped early
		return shardSums{}, err
	}

	header, err := encodeHeader(meta, dataSHA)
	if err != nil {
		return shardSums{}, err
	}
	if len(header) != len(placeholder) {
		// Cannot happen: both checksums are 64 hex digits that JSON does not escape.
		return shardSums{}, fmt.Errorf("internal error: header changed length from %d to %d bytes", len(placeholder), len(header))
	}
	patch := header
	if direct {
		// Direct I/O writes whole aligned blocks: rewrite the blocks holding
		// the header, with the data bytes that share them.
		patch = headerBlocks(header, st)
	}
	if _, err := f.WriteAt(patch, 0); err != nil {
		return shardSums{}, fmt.Errorf("write final header: %w", err)
	}
	size := int64(len(header)) + 12*int64(meta.Len())
	if direct {
		if err := f.Truncate(size); err != nil { // drop the padding of the last block
			return shardSums{}, fmt.Errorf("truncate padding: %w", err)
		}
	}
	headerSum := sha256.Sum256(header)
	return shardSums{bytes: size, headerSHA256: hex.EncodeToString(headerSum[:]), dataSHA256: dataSHA}, nil
}

// headerBlocks returns the file's first bytes up to the block boundary
// after the header, in aligned memory: the header, then data, then zeros if
// the file is shorter (the padding the pipeline also wrote, truncated later).
func headerBlocks(header []byte, st State) []byte {
	b := alignedBytes(roundUp(len(header), blockAlign))
	n := copy(b, header)
	for _, t := range st.tensors() {
		n += copy(b[n:], floatBytes(t))
	}
	return b
}

// hashFloats returns the hex sha256 of the tensors' bytes in order, or ""
// if ctx ends first (the caller then discards the result).
func hashFloats(ctx context.Context, tensors [3][]float32) string {
	h := sha256.New()
	for _, t := range tensors {
		b := floatBytes(t)
		for off := 0; off < len(b); off += hashChunk {
			if ctx.Err() != nil {
				return ""
			}
			h.Write(b[off:min(off+hashChunk, len(b))])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

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
