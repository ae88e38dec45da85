package jobspec

// FieldErrors flattens a joined validation error into one message per
// field, for the API's 400 response and the CLI.
func FieldErrors(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, FieldErrors(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// truncate keeps user-supplied text in error messages short: a 1 MiB name
// must not become a 1 MiB error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
