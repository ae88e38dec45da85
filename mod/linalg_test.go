package mod

import (
	"math"
	"testing"

	"gorgonia.org/tensor"
)

func naiveMatMul(a []float64, transA bool, b []float64, transB bool, m, k, n int) []float64 {
	c := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				av := a[i*k+p]
				if transA {
					av = a[p*m+i]
				}
				bv := b[p*n+j]
				if transB {
					bv = b[j*k+p]
				}
				s += av * bv
			}
			c[i*n+j] = s
		}
	}
	return c
}

func TestPlanMatMulMatchesNaive(t *testing.T) {
	r := newRNG(7, 0)
	for _, tc := range []struct {
		name           string
		m, k, n        int
		transA, transB bool
	}{
		{"NN", 5, 7, 3, false, false},
		{"TN", 5, 7, 3, true, false},
		{"NT", 5, 7, 3, false, true},
		{"TT", 4, 6, 9, true, true},
		{"vector", 1, 8, 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := make([]float64, tc.m*tc.k)
			b := make([]float64, tc.k*tc.n)
			for i := range a {
				a[i] = r.normal()
			}
			for i := range b {
				b[i] = r.normal()
			}
			want := naiveMatMul(a, tc.transA, b, tc.transB, tc.m, tc.k, tc.n)
			c := make([]float64, tc.m*tc.n)
			p := planMatMul(a, tc.transA, b, tc.transB, c, tc.m, tc.k, tc.n)
			p.run()
			for i := range c {
				if math.Abs(c[i]-want[i]) > 1e-12 {
					t.Fatalf("c[%d] = %v, want %v", i, c[i], want[i])
				}
			}
			// float32 through the same path.
			a32, b32, c32 := toF32(a), toF32(b), make([]float32, tc.m*tc.n)
			p32 := planMatMul(a32, tc.transA, b32, tc.transB, c32, tc.m, tc.k, tc.n)
			p32.run()
			for i := range c32 {
				if math.Abs(float64(c32[i])-want[i]) > 1e-4 {
					t.Fatalf("float32 c[%d] = %v, want %v", i, c32[i], want[i])
				}
			}
		})
	}
}

// TestPlanMatMulMatchesGorgonia checks the planned gemm against
// gorgonia's own (*Dense).MatMul, transposed views included.
func TestPlanMatMulMatchesGorgonia(t *testing.T) {
	r := newRNG(8, 0)
	const m, k, n = 6, 5, 4
	a, b := make([]float32, k*m), make([]float32, n*k)
	for i := range a {
		a[i] = float32(r.normal())
	}
	for i := range b {
		b[i] = float32(r.normal())
	}
	ta := tensor.New(tensor.WithShape(k, m), tensor.WithBacking(append([]float32(nil), a...)))
	tb := tensor.New(tensor.WithShape(n, k), tensor.WithBacking(append([]float32(nil), b...)))
	if err := ta.T(); err != nil {
		t.Fatal(err)
	}
	if err := tb.T(); err != nil {
		t.Fatal(err)
	}
	want, err := ta.MatMul(tb)
	if err != nil {
		t.Fatal(err)
	}
	c := make([]float32, m*n)
	p := planMatMul(a, true, b, true, c, m, k, n)
	p.run()
	for i, w := range want.Data().([]float32) {
		if c[i] != w {
			t.Fatalf("c[%d] = %v, gorgonia MatMul gives %v", i, c[i], w)
		}
	}
}

func TestMatMulDoesNotAllocate(t *testing.T) {
	a, b, c := make([]float32, 64*64), make([]float32, 64*64), make([]float32, 64*64)
	p := planMatMul(a, true, b, false, c, 64, 64, 64)
	if n := testing.AllocsPerRun(20, p.run); n > 0 {
		t.Fatalf("planned matmul allocates %v times per call; the training step must not", n)
	}
}

func toF32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}
