package main

import "github.com/spf13/pflag"

const defaultData = "data/tinyshakespeare.txt"

// addDataFlag adds --data, the corpus, shared by train, eval, local and
// isoflop.
func addDataFlag(fs *pflag.FlagSet, v *string, usage string) {
	fs.StringVar(v, "data", defaultData, usage)
	bindEnv(fs, "data", "MODCOORD_DATA")
}
