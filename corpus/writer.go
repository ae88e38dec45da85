package corpus

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Writer streams tokens into an llm.c shard. Tokens go to a temporary file
// in the target directory; Close writes the header, fsyncs and renames it
// into place, so a reader sees either no shard or a complete one, never a
// half-written file, and a crash leaves at most a *.tmp-* file behind.
type Writer struct {
	path string
	f    *os.File
	w    *bufio.Writer
	n    int
}

// Create starts a shard that Close will put at path.
func Create(path string) (*Writer, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create shard %s: %w", path, err)
	}
	w := &Writer{path: path, f: f, w: bufio.NewWriterSize(f, 1<<20)}
	// The header is rewritten by Close once the count is known.
	if _, err := w.w.Write(header(0)); err != nil {
		w.Abort()
		return nil, fmt.Errorf("write shard %s: %w", path, err)
	}
	return w, nil
}

// Len is the number of tokens written so far.
func (w *Writer) Len() int { return w.n }

// Write appends tokens. Each must fit in uint16, and a shard holds at most
// MaxShardTokens.
func (w *Writer) Write(tokens []int) error {
	if w.n+len(tokens) > MaxShardTokens {
		return fmt.Errorf("write shard %s: %d tokens would exceed llm.c's limit of %d per shard (use smaller shards)", w.path, w.n+len(tokens), MaxShardTokens)
	}
	for _, t := range tokens {
		if t < 0 || t > 0xffff {
			return fmt.Errorf("write shard %s: token %d does not fit the shard's uint16 tokens (the tokenizer's vocabulary is too large for llm.c version %d shards)", w.path, t, Version)
		}
	}
	// Encode into the bufio buffer directly rather than one two-byte
	// Write per token.
	for len(tokens) > 0 {
		if w.w.Available() < 2 {
			if err := w.w.Flush(); err != nil {
				return fmt.Errorf("write shard %s: %w", w.path, err)
			}
		}
		b := w.w.AvailableBuffer()
		n := min(len(tokens), cap(b)/2)
		for _, t := range tokens[:n] {
			b = append(b, byte(t), byte(t>>8))
		}
		if _, err := w.w.Write(b); err != nil {
			return fmt.Errorf("write shard %s: %w", w.path, err)
		}
		w.n += n
		tokens = tokens[n:]
	}
	return nil
}

// Close completes the shard. On error the temporary file is removed and
// nothing appears at the path.
func (w *Writer) Close() error {
	err := w.w.Flush()
	if err == nil {
		_, err = w.f.WriteAt(header(w.n), 0)
	}
	if err == nil {
		err = w.f.Sync()
	}
	if err != nil {
		w.Abort()
		return fmt.Errorf("write shard %s: %w", w.path, err)
	}
	return w.commit()
}

// commit closes and renames the synced temporary file into place.
func (w *Writer) commit() error {
	tmp := w.f.Name()
	if err := w.f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write shard %s: %w", w.path, err)
	}
	if err := os.Rename(tmp, w.path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write shard %s: %w", w.path, err)
	}
	return syncDir(filepath.Dir(w.path))
}

// Abort drops the shard: the temporary file is closed and removed.
func (w *Writer) Abort() {
	_ = w.f.Close()
	_ = os.Remove(w.f.Name())
}

// WriteShard writes tokens as one llm.c shard at path, atomically.
func WriteShard(path string, tokens []int) error {
	w, err := Create(path)
	if err != nil {
		return err
	}
	if err := w.Write(tokens); err != nil {
		w.Abort()
		return err
	}
	return w.Close()
}

// writeFileAtomic writes a small file by temp file, fsync and rename.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
