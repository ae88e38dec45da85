package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// readToken reads the API token from a file, or $MODCOORD_TOKEN. It never
// logs the value.
func readToken(file string, getenv func(string) string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("token file %s is empty", file)
		}
		return t, nil
	}
	if t := getenv("MODCOORD_TOKEN"); t != "" {
		return t, nil
	}
	return "", errors.New("no API token: pass --token-file or set MODCOORD_TOKEN (the coordinators require one)")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

func hostnameOr(def string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return def
}
