package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envAnnotation is the flag annotation that names the environment
// variables a flag falls back to, the first one documented, any others
// accepted as older spellings.
const envAnnotation = "modcoord/env"

// bindEnv lets the flag be set from the environment when the command line
// does not give it. The variable is read after parsing rather than used as
// the flag's default, so that --help shows the real default and a value
// from the environment is checked like one from the command line.
func bindEnv(fs *pflag.FlagSet, name string, envs ...string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("bindEnv: no flag --" + name) // a programming error, caught by any test
	}
	f.Usage += " (env " + envs[0] + ")"
	_ = fs.SetAnnotation(name, envAnnotation, envs)
}

// applyEnv sets each unset flag of cmd that has an environment variable
// from it.
func applyEnv(cmd *cobra.Command, getenv func(string) string) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		for _, env := range f.Annotations[envAnnotation] {
			v := getenv(env)
			if v == "" {
				continue
			}
			if e := f.Value.Set(v); e != nil {
				err = usageErrorf("$%s=%q for --%s: %v", env, v, f.Name, e)
			}
			return
		}
	})
	return err
}

// normalizeFlagName maps the spellings earlier releases used for the
// coordinator address (--addr on the client commands, --coordinators on
// worker) to today's --coordinator, so deployments written for them keep
// working, and accepts _ for -.
func normalizeFlagName(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	switch name {
	case "addr", "coordinators":
		return "coordinator"
	}
	return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
}
