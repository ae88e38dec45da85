package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/mod"
)

// versionInfo is what `version` prints.
type versionInfo struct {
	Version    string `json:"version"`               // module version: a tag, a pseudo-version, or (devel)
	Commit     string `json:"commit,omitempty"`      // VCS revision the binary was built from
	CommitTime string `json:"commit_time,omitempty"` // its commit time, RFC 3339
	Modified   bool   `json:"modified"`              // built from a work tree with uncommitted changes
	Go         string `json:"go"`
	Platform   string `json:"platform"`
	BLAS       string `json:"blas"` // the matrix engine training uses: OpenBLAS (cgo) or gonum (pure Go)
}

func readVersion() versionInfo {
	v := versionInfo{Version: "(unknown)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, BLAS: mod.BLASEngine()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Version = bi.Main.Version
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func newVersionCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS commit, Go version and BLAS of this binary",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := readVersion()
			out := cmd.OutOrStdout()
			if jsonOut {
				return writeJSON(out, v)
			}
			fmt.Fprintf(out, "modcoord %s\n", v.Version)
			if v.Commit != "" {
				dirty := ""
				if v.Modified {
					dirty = " (modified)"
				}
				fmt.Fprintf(out, "commit   %s%s %s\n", v.Commit, dirty, v.CommitTime)
			}
			fmt.Fprintf(out, "go       %s %s\n", v.Go, v.Platform)
			fmt.Fprintf(out, "blas     %s\n", v.BLAS)
			return nil
		},
	}
	addJSONFlag(cmd, &jsonOut)
	return cmd
}
