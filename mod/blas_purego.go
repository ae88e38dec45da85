//go:build !cgo

package mod

// Without cgo, gorgonia keeps its default engine: gonum's pure-Go BLAS,
// roughly 8x slower than OpenBLAS on this machine. It is the fallback for
// CGO_ENABLED=0 builds only.
func selectBLAS() string { return "gonum pure-Go (CGO_ENABLED=0 fallback; ~8x slower)" }

// setBLASThreads is a no-op: gonum's BLAS runs in the calling goroutine.
func setBLASThreads(int) {}
