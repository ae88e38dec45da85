package corpus

import (
	"errors"
	"fmt"
	"sort"
)

// source is a sequence of tokens read by position. Corpus draws its
// windows from one for training and one for validation.
type source interface {
	Len() int
	// read copies tokens [off, off+len(dst)) into dst; the range must lie
	// within [0, Len()).
	read(off int, dst []int32)
	checkVocab(vocab int) error
	Close() error
}

// Stream is a list of shards read as one virtual concatenation: position p
// is token p − start[k] of shard k, where start[k] is the sum of the
// lengths of shards before k. Windows may cross shard boundaries.
type Stream struct {
	shards []*Shard
	start  []int // start[k] is the first position of shard k; start[len] = Len
}

// OpenStream maps each path in order. On error it unmaps what it mapped.
func OpenStream(paths []string, f Format) (*Stream, error) {
	if len(paths) == 0 {
		return nil, errors.New("open token stream: no shard files given")
	}
	s := &Stream{start: []int{0}}
	for _, p := range paths {
		sh, err := OpenShard(p, f)
		if err != nil {
			_ = s.Close()
			return nil, err
		}
		s.shards = append(s.shards, sh)
		s.start = append(s.start, s.start[len(s.start)-1]+sh.Len())
	}
	return s, nil
}

// Len is the total number of tokens.
func (s *Stream) Len() int { return s.start[len(s.start)-1] }

// Shards are the stream's shards in order.
func (s *Stream) Shards() []*Shard { return s.shards }

func (s *Stream) read(off int, dst []int32) {
	// The last shard whose start is <= off holds position off.
	k := sort.SearchInts(s.start[1:], off+1)
	for len(dst) > 0 {
		sh := s.shards[k]
		local := off - s.start[k]
		n := min(len(dst), sh.Len()-local)
		sh.read(local, dst[:n])
		dst, off, k = dst[n:], off+n, k+1
	}
}

func (s *Stream) checkVocab(vocab int) error {
	for _, sh := range s.shards {
		if err := sh.checkVocab(vocab); err != nil {
			return err
		}
	}
	return nil
}

// Close unmaps every shard and returns the first error.
func (s *Stream) Close() error {
	var first error
	for _, sh := range s.shards {
		if err := sh.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.shards, s.start = nil, []int{0}
	return first
}

// bytesSource is an in-memory byte-level text: token i is byte i.
type bytesSource []byte

func (b bytesSource) Len() int { return len(b) }

func (b bytesSource) read(off int, dst []int32) {
	for j, c := range b[off : off+len(dst)] {
		dst[j] = int32(c)
	}
}

func (b bytesSource) checkVocab(vocab int) error {
	if vocab >= 256 {
		return nil
	}
	for i, c := range b {
		if int(c) >= vocab {
			return fmt.Errorf("in-memory byte corpus: byte %d at offset %d is outside the model's vocabulary of %d (byte-level text needs vocab 256)", c, i, vocab)
		}
	}
	return nil
}

func (bytesSource) Close() error { return nil }
