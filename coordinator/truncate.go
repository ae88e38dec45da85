package coordinator

// truncate keeps client-supplied text in errors and logs short.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
