//go:build !linux

package checkpoint

import (
	"errors"
	"os"
)

// setDirectIO is only implemented on Linux; elsewhere checkpoints are
// written through the page cache.
func setDirectIO(f *os.File, on bool) error {
	if !on {
		return nil
	}
	return errors.New("direct I/O is only used on Linux")
}
