package corpus

import (
	"encoding/binary"
	"fmt"
)

// Shard is one mapped token file. Its tokens are read in place; nothing is
// copied into the Go heap. The file must not be truncated or rewritten in
// place while it is open (a read past a truncation is a SIGBUS); Writer
// replaces files by rename, which leaves an open mapping intact.
type Shard struct {
	path string
	data []byte // the whole mapped file
	toks []byte // the token bytes within data
	n    int
	max  int // largest token, -1 until scanned
}

// OpenShard maps a token file and validates its layout.
func OpenShard(path string, f Format) (*Shard, error) {
	data, err := mapFile(path)
	if err != nil {
		return nil, err
	}
	off, n, err := tokenRange(path, data, f)
	if err != nil {
		_ = unmapFile(data)
		return nil, err
	}
	return &Shard{path: path, data: data, toks: data[off : off+2*n], n: n, max: -1}, nil
}

// Path is the file the shard was opened from.
func (s *Shard) Path() string { return s.path }

// Len is the number of tokens.
func (s *Shard) Len() int { return s.n }

// At is token i.
func (s *Shard) At(i int) int { return int(binary.LittleEndian.Uint16(s.toks[2*i:])) }

// read copies tokens [off, off+len(dst)) into dst.
func (s *Shard) read(off int, dst []int32) {
	b := s.toks[2*off : 2*(off+len(dst))]
	for j := range dst {
		dst[j] = int32(b[2*j]) | int32(b[2*j+1])<<8
	}
}

// MaxToken is the largest token in the shard. The first call scans the
// whole file (sequential reads of the mapping); the result is kept.
func (s *Shard) MaxToken() int {
	if s.max >= 0 {
		return s.max
	}
	m := 0
	for j := 0; j+1 < len(s.toks); j += 2 {
		if t := int(s.toks[j]) | int(s.toks[j+1])<<8; t > m {
			m = t
		}
	}
	s.max = m
	return m
}

// checkVocab reports the first token >= vocab, naming the file.
func (s *Shard) checkVocab(vocab int) error {
	if s.MaxToken() < vocab {
		return nil
	}
	for i := 0; i < s.n; i++ {
		if t := s.At(i); t >= vocab {
			return fmt.Errorf("token file %s: token %d at index %d is outside the model's vocabulary of %d (the shards were made with a larger tokenizer: raise the model's vocab to at least %d or re-prepare the corpus with the model's tokenizer)", s.path, t, i, vocab, s.MaxToken()+1)
		}
	}
	return nil
}

// Close unmaps the file. A closed shard must not be read.
func (s *Shard) Close() error {
	data := s.data
	s.data, s.toks, s.n = nil, nil, 0
	if err := unmapFile(data); err != nil {
		return fmt.Errorf("unmap token file %s: %w", s.path, err)
	}
	return nil
}
