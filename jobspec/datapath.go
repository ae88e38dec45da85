package jobspec

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// CheckDataPath checks the form of a spec's data path, without touching
// the file system: it must be a non-empty path relative to a worker's data
// root, with no ".." component, no NUL byte, at most MaxDataPathBytes.
// Submit runs it (the coordinator has no data root); OpenData runs it
// again before any open.
func CheckDataPath(rel string) error {
	shown := truncate(rel, 200)
	switch {
	case rel == "":
		return errors.New("data: required; give the training text's path relative to the workers' data root, e.g. tinyshakespeare.txt")
	case strings.ContainsRune(rel, 0):
		return fmt.Errorf("data: %q contains a NUL byte; give a plain relative path", shown)
	case len(rel) > MaxDataPathBytes:
		return fmt.Errorf("data: a %d-byte path is longer than the %d allowed", len(rel), MaxDataPathBytes)
	case filepath.IsAbs(rel):
		return fmt.Errorf("data: %q is absolute; give a path relative to the workers' data root, e.g. %q", shown, truncate(strings.TrimLeft(rel, "/"), 200))
	}
	for part := range strings.SplitSeq(filepath.ToSlash(rel), "/") {
		if part == ".." {
			return fmt.Errorf("data: %q has a \"..\" component; give a path inside the workers' data root, without \"..\"", shown)
		}
	}
	return nil
}
