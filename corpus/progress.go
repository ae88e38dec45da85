package corpus

import (
	"fmt"
	"io"
)

// Progress is Prepare's state after each chunk it tokenises.
type Progress struct {
	Path        string // the input file being read
	Done, Total int64  // input bytes read so far and in all
	TrainTokens int64
	ValTokens   int64
}

// Fraction is Done/Total in [0,1].
func (p Progress) Fraction() float64 {
	if p.Total <= 0 {
		return 1
	}
	return float64(p.Done) / float64(p.Total)
}

// ProgressLines returns a Progress callback that writes one line to w per
// whole percent (and at the end), for logs; a terminal can draw a bar from
// the callback's numbers instead. Write errors are ignored: progress is
// advisory.
func ProgressLines(w io.Writer) func(Progress) {
	last := -1
	return func(p Progress) {
		pct := int(100 * p.Fraction())
		if pct == last {
			return
		}
		last = pct
		fmt.Fprintf(w, "prepare: %3d%% %d of %d bytes, %d train and %d val tokens, %s\n", pct, p.Done, p.Total, p.TrainTokens, p.ValTokens, p.Path)
	}
}
