package corpus

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// input is one file Prepare reads: text to tokenise or, for a name ending
// in .bin, a token file to copy.
type input struct {
	path   string
	size   int64
	tokens bool
}

// listInputs expands directories into their regular files, walked in
// lexical order (filepath.WalkDir's order), so the same tree always gives
// the same stream. Symlinks, devices and the like inside a directory are
// skipped; a path named directly must be a regular file or a directory.
// Only names are held, never contents.
func listInputs(paths []string) ([]input, error) {
	var out []input
	add := func(path string, size int64) {
		out = append(out, input{path: path, size: size, tokens: strings.HasSuffix(strings.ToLower(path), ".bin")})
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("prepare input: %w", err)
		}
		switch {
		case st.Mode().IsRegular():
			add(p, st.Size())
		case st.IsDir():
			err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if !d.Type().IsRegular() {
					return nil
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				add(path, info.Size())
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("prepare input directory %s: %w", p, err)
			}
		default:
			return nil, fmt.Errorf("prepare input %s is neither a regular file nor a directory", p)
		}
	}
	return out, nil
}
