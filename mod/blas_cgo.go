//go:build cgo

package mod

// OpenBLAS is linked here, not through CGO_LDFLAGS, so that a plain
// `go build` works; gonum's netlib binding alone leaves cblas_* undefined.

/*
#cgo LDFLAGS: -lopenblas
*/
import "C"

import (
	"gonum.org/v1/netlib/blas/netlib"
	"gorgonia.org/tensor"
)

func selectBLAS() string {
	tensor.Use(netlib.Implementation{})
	return "openblas (cgo via gonum netlib)"
}
