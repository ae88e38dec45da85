package corpus

import (
	"fmt"
	"path/filepath"
)

// sink writes one stream (train or val) as numbered llm.c shards of at
// most max tokens each: <kind>_000000.bin, <kind>_000001.bin, ...
type sink struct {
	dir, kind string
	max       int
	w         *Writer
	names     []string
	total     int64
}

func (s *sink) write(tokens []int) error {
	for len(tokens) > 0 {
		if s.w == nil {
			name := fmt.Sprintf("%s_%06d.bin", s.kind, len(s.names))
			w, err := Create(filepath.Join(s.dir, name))
			if err != nil {
				return err
			}
			s.w = w
			s.names = append(s.names, name)
		}
		n := min(len(tokens), s.max-s.w.Len())
		if err := s.w.Write(tokens[:n]); err != nil {
			return err
		}
		s.total += int64(n)
		tokens = tokens[n:]
		if s.w.Len() == s.max {
			if err := s.closeShard(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *sink) closeShard() error {
	w := s.w
	s.w = nil
	return w.Close()
}

// finish completes the open shard, if any.
func (s *sink) finish() error {
	if s.w == nil {
		return nil
	}
	return s.closeShard()
}

// abort drops the open shard; completed ones stay but are in no manifest.
func (s *sink) abort() {
	if s.w != nil {
		s.w.Abort()
		s.w = nil
	}
}
