package allreduce

import "golang.org/x/sys/cpu"

// hasAVX2 is fixed at start-up and never written again.
var hasAVX2 = cpu.X86.HasAVX2

// SumF32 sets dst[i] = left[i] + right[i] for i < len(dst); left and
// right hold at least len(dst) elements and may be dst itself. Each
// element is one IEEE single-precision addition, in a vector lane or
// not, so the bits are those of the scalar loop: vectorizing changes
// speed, never the fixed summation order's result.
func SumF32(dst, left, right []float32) {
	n := len(dst)
	if n == 0 {
		return
	}
	left, right = left[:n], right[:n]
	if hasAVX2 {
		sumF32AVX2(&dst[0], &left[0], &right[0], n)
		return
	}
	sumF32Generic(dst, left, right)
}

//go:noescape
func sumF32AVX2(dst, left, right *float32, n int)
