package allreduce

import (
	"errors"
	"fmt"
)

// PeerError is how a collective fails because of another rank: that rank
// went silent, aborted, or disagreed about which collective comes next.
// Every rank of a failed collective returns one, naming the same peer
// when the cause was a silent peer.
type PeerError struct {
	Op   string // "reduce-scatter", "all-gather", "scalars"
	Step uint64
	Rank int // the peer blamed
	Err  error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("%s step %d: rank %d: %v", e.Op, e.Step, e.Rank, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

var (
	// ErrSilent is wrapped by a PeerError for a peer not heard from
	// within the collective's deadline.
	ErrSilent = errors.New("peer silent")
	// ErrAborted is wrapped by a PeerError when a peer gave up on the
	// collective and said so.
	ErrAborted = errors.New("collective aborted")
	// ErrMismatch is wrapped by a PeerError when a peer runs a different
	// collective or step under the same sequence number.
	ErrMismatch = errors.New("ranks disagree on the collective")
	// ErrClosed is returned by collectives on a closed Ring.
	ErrClosed = errors.New("ring closed")
)
