package mod

import (
	"fmt"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/tensor"
)

// tensor.Use is process-global and gorgonia reads it without a lock, so it
// is set exactly once, before the first product.
var blasOnce sync.Once
var blasName string

// BLASEngine selects the matrix engine (once per process) and names it.
//
// Every BLAS call runs on one thread: the cores are used instead by
// Parallel, which gives each core its own model replica and share of the
// batch. Threaded OpenBLAS spends much of a small product's time waking and
// spinning its threads, and leaves the cores idle during the elementwise
// work between products; one replica per core has neither problem.
func BLASEngine() string {
	blasOnce.Do(func() {
		blasName = selectBLAS()
		setBLASThreads(1)
	})
	return blasName
}

// matmul is one planned product C = op(A)·op(B) over buffers that live as
// long as the model. The product runs on the BLAS that gorgonia.org/tensor
// dispatches to (tensor.Use / tensor.WhichBLAS): OpenBLAS with cgo, gonum's
// pure-Go BLAS without. It calls the gemm directly rather than through
// (*tensor.Dense).MatMul because MatMul boxes its slices into interfaces,
// two allocations per product; the training step makes thousands of
// products and allocates nothing. TestPlanMatMulMatchesGorgonia checks that
// both paths give the same result.
type matmul struct {
	transA, transB blas.Transpose
	m, n, k        int
	lda, ldb, ldc  int
	a32, b32, c32  []float32
	a64, b64, c64  []float64
	impl           tensor.BLAS
}

// planMatMul plans C[m,n] = op(A)·op(B), where op(A) is [m,k] and op(B) is
// [k,n]. A is stored row-major [m,k], or [k,m] when transA; likewise B.
func planMatMul[F Float](a []F, transA bool, b []F, transB bool, c []F, m, k, n int) matmul {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	return planMatMulStrided(a, transA, lda, b, transB, ldb, c, n, m, k, n)
}

// planMatMulStrided is planMatMul over sub-matrices: each operand's rows
// are its leading dimension (lda, ldb, ldc) apart in its buffer, as when
// a product reads or writes a block of a larger matrix.
func planMatMulStrided[F Float](a []F, transA bool, lda int, b []F, transB bool, ldb int, c []F, ldc int, m, k, n int) matmul {
	// extent is how much of a buffer a rows×cols matrix with leading
	// dimension ld spans.
	extent := func(rows, cols, ld int) int {
		if rows == 0 || cols == 0 {
			return 0
		}
		return (rows-1)*ld + cols
	}
	ar, ac, br, bc := m, k, k, n
	if transA {
		ar, ac = k, m
	}
	if transB {
		br, bc = n, k
	}
	ea, eb, ec := extent(ar, ac, lda), extent(br, bc, ldb), extent(m, n, ldc)
	if len(a) < ea || len(b) < eb || len(c) < ec || lda < ac || ldb < bc || ldc < n {
		panic(fmt.Sprintf("mod: planMatMul buffers too small or leading dimensions too short: a %d<%d (ld %d) or b %d<%d (ld %d) or c %d<%d (ld %d) for %d×%d×%d", len(a), ea, lda, len(b), eb, ldb, len(c), ec, ldc, m, k, n))
	}
	BLASEngine()
	p := matmul{transA: blas.NoTrans, transB: blas.NoTrans, m: m, n: n, k: k, lda: lda, ldb: ldb, ldc: ldc, impl: tensor.WhichBLAS()}
	if transA {
		p.transA = blas.Trans
	}
	if transB {
		p.transB = blas.Trans
	}
	switch a := any(a).(type) {
	case []float32:
		p.a32, p.b32, p.c32 = a[:ea], any(b).([]float32)[:eb], any(c).([]float32)[:ec]
	case []float64:
		p.a64, p.b64, p.c64 = a[:ea], any(b).([]float64)[:eb], any(c).([]float64)[:ec]
	}
	// BLAS rejects leading dimensions of 0 even for empty products.
	p.lda, p.ldb, p.ldc = max(p.lda, 1), max(p.ldb, 1), max(p.ldc, 1)
	return p
}

func (p *matmul) isTransA() bool { return p.transA == blas.Trans }
func (p *matmul) isTransB() bool { return p.transB == blas.Trans }

// flops is the product's work: 2·m·k·n.
func (p *matmul) flops() float64 { return 2 * float64(p.m) * float64(p.k) * float64(p.n) }

// gemvRows is the largest row count computed as matrix-vector products:
// a gemm packs all of B on every call, which for the one-token products
// of decoding costs more than the arithmetic.
const gemvRows = 8

func (p *matmul) run() {
	if p.m == 0 || p.n == 0 {
		return
	}
	if p.m <= gemvRows && p.transA == blas.NoTrans {
		p.runRows()
		return
	}
	if p.c32 != nil {
		p.impl.Sgemm(p.transA, p.transB, p.m, p.n, p.k, 1, p.a32, p.lda, p.b32, p.ldb, 0, p.c32, p.ldc)
		return
	}
	p.impl.Dgemm(p.transA, p.transB, p.m, p.n, p.k, 1, p.a64, p.lda, p.b64, p.ldb, 0, p.c64, p.ldc)
}

// runRows computes each row of C as op(B)ᵀ·a_i with one gemv per row.
func (p *matmul) runRows() {
	// Row-major B [k,n] (no trans): c = Bᵀa, a gemv with Trans over a k×n
	// matrix. B stored [n,k] (trans): c = B·a, NoTrans over n×k.
	tB, rows, cols := blas.Trans, p.k, p.n
	if p.transB == blas.Trans {
		tB, rows, cols = blas.NoTrans, p.n, p.k
	}
	for i := 0; i < p.m; i++ {
		if p.c32 != nil {
			p.impl.Sgemv(tB, rows, cols, 1, p.b32, p.ldb, p.a32[i*p.lda:i*p.lda+p.k], 1, 0, p.c32[i*p.ldc:i*p.ldc+p.n], 1)
			continue
		}
		p.impl.Dgemv(tB, rows, cols, 1, p.b64, p.ldb, p.a64[i*p.lda:i*p.lda+p.k], 1, 0, p.c64[i*p.ldc:i*p.ldc+p.n], 1)
	}
}
