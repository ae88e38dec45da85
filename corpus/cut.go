package corpus

// A text is tokenised in chunks so that memory stays bounded. gpt2's
// pre-tokeniser splits text into pieces that are either all whitespace or
// an optional leading space followed by non-whitespace, and no piece's
// match looks past a non-whitespace character into the whitespace after
// it. So cutting between an ASCII non-space character and the whitespace
// that follows it never changes the tokens: each side tokenises exactly as
// it did inside the whole. Byte tokens depend on nothing, so any cut is
// exact for them.

func isASCIISpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// safeAt reports whether a cut before buf[p] leaves tokenisation unchanged.
func safeAt(buf []byte, p int, anywhere bool) bool {
	if anywhere {
		return true
	}
	return p > 0 && p < len(buf) && isASCIISpace(buf[p]) && buf[p-1] > ' ' && buf[p-1] < 0x7f
}

// lastCut is the last safe cut in buf, in (0, len(buf)]. If there is none
// (a megabyte without a space) it cuts at the last UTF-8 character
// boundary; that one cut may tokenise differently from the whole text.
func lastCut(buf []byte, anywhere bool) int {
	if anywhere {
		return len(buf)
	}
	for p := len(buf) - 1; p > 0; p-- {
		if safeAt(buf, p, false) {
			return p
		}
	}
	p := len(buf)
	for k := 0; k < 3 && p > 1 && buf[p-1]&0xc0 == 0x80; k++ {
		p--
	}
	if p > 1 && buf[p-1] >= 0xc0 {
		p-- // do not end on a lead byte
	}
	return p
}

// firstCutFrom is the first safe cut at or after k, or len(buf).
func firstCutFrom(buf []byte, k int, anywhere bool) int {
	if anywhere {
		return k
	}
	for p := max(k, 1); p < len(buf); p++ {
		if safeAt(buf, p, false) {
			return p
		}
	}
	return len(buf)
}
