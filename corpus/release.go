package corpus

import (
	"errors"
	"fmt"
)

// Release drops the shard pages this process has mapped in so far from
// its resident set. Mapped file pages are clean page cache the kernel can
// reclaim at any time, so this is not needed for correctness; it keeps
// RSS — what monitoring and OOM heuristics look at — near the pages of
// the last few batches instead of every page ever read. Reads stay valid
// and may run concurrently: a released page is refaulted on its next
// read. A trainer can call it every few hundred steps.
func (c *Corpus) Release() error {
	return errors.Join(release(c.train), release(c.val))
}

func release(s source) error {
	st, ok := s.(*Stream)
	if !ok {
		return nil // in memory: nothing mapped
	}
	for _, sh := range st.shards {
		if err := releaseFile(sh.data); err != nil {
			return fmt.Errorf("release token file %s: %w", sh.path, err)
		}
	}
	return nil
}
