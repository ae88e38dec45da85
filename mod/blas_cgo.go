//go:build cgo

package mod

// OpenBLAS is linked here, not through CGO_LDFLAGS, so that a plain
// `go build` works; gonum's netlib binding alone leaves cblas_* undefined.

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int);
*/
import "C"

import (
	"gonum.org/v1/netlib/blas/netlib"
	"gorgonia.org/tensor"
)

// setBLASThreads sets how many threads one OpenBLAS call may use.
func setBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

func selectBLAS() string {
	tensor.Use(netlib.Implementation{})
	return "openblas (cgo via gonum netlib)"
}
