package coordinator

import "unicode/utf8"

// truncate keeps client-supplied text in errors and logs short. It cuts
// at a rune boundary: a cut rune would be invalid UTF-8, which JSON turns
// into U+FFFD, so a replica restored from a snapshot would hold different
// text than one that applied the command.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
