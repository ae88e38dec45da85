//go:build !amd64

package allreduce

// SumF32 sets dst[i] = left[i] + right[i] for i < len(dst); see the amd64
// version.
func SumF32(dst, left, right []float32) { sumF32Generic(dst, left, right) }
