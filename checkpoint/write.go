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
	"syscall"
)

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
